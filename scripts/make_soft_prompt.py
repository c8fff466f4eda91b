"""Write a soft prompt for preference-guided DPO's ``guidance: embedding`` mode.

    python scripts/make_soft_prompt.py --model assets/tiny-chat --n-tokens 8 --output logs/soft_prompt.pt \\
        [--init-text "Answer in the user's language."]

The file holds one float32 tensor ``[n_tokens, hidden_size]``, the shape
`lit_align.modules.preference_guided.load_soft_prompt` accepts. With ``--init-text`` the rows are the model's
input embeddings of the text's tokens, repeated or cut to ``n_tokens``: starting from a real instruction,
P-tuning starts where a text prompt would be (Lester et al. 2021 found vocabulary initialisation better than
random). Without it, the rows are normal noise with the embedding matrix's standard deviation, so the soft
prompt is on the scale the first layer expects.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lit_align.models import ModelSettings, load_causal_lm, load_tokenizer
from lit_align.outputs import output_file


def make_soft_prompt(model, tokenizer, n_tokens: int, init_text: str | None = None, seed: int = 0) -> torch.Tensor:
    """``[n_tokens, hidden_size]`` from the embeddings of ``init_text`` (tiled to length) or scaled noise."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be at least 1, got {n_tokens}")
    weight = model.get_input_embeddings().weight.detach().float()
    if init_text:
        ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"--init-text {init_text!r} has no tokens")
        ids = (ids * (n_tokens // len(ids) + 1))[:n_tokens]
        return weight[torch.tensor(ids)].clone()
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_tokens, weight.shape[1], generator=generator) * weight.std()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory or hub name (the recipe's model)")
    parser.add_argument("--n-tokens", type=int, default=8, help="number of virtual tokens (default 8)")
    parser.add_argument("--output", type=Path, default=Path("logs/soft_prompt.pt"), help="default logs/soft_prompt.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--init-text", default=None, help="initialise from this text's token embeddings")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_causal_lm(
        ModelSettings(args.model, trust_remote_code=args.trust_remote_code), vocab_size=len(tokenizer)
    )
    prompt = make_soft_prompt(model, tokenizer, args.n_tokens, args.init_text, args.seed)
    output = output_file(args.output, args.overwrite)
    torch.save(prompt.contiguous(), output)
    print(f"wrote {output}: soft prompt {tuple(prompt.shape)}")
    return output


if __name__ == "__main__":
    main()
