"""Build `assets/tiny-chat`: a ~1M-parameter Llama chat model with its own tokenizer, shipped in the repo.

Why it exists: the quickstart has to run offline on a laptop CPU, yet it should exercise exactly the code
path a user's Qwen or Llama checkpoint takes: `AutoTokenizer`/`AutoModelForCausalLM.from_pretrained` on a
directory, a ChatML chat template, a fast tokenizer with offsets, EOS/pad ids read from the config. So
instead of a mock model we ship a real (tiny) one, saved by transformers in its standard format.

The tokenizer is a byte-level BPE (Qwen2's pre-tokenizer regex, so digits split one by one; one token per Han
character) trained on the demo data, so it covers English and Chinese compactly while any Unicode still encodes
without unknowns. The demo text runs out of merges before 4096 entries, so `--vocab-size` is an upper bound.
The model gets a few hundred steps of language-model pretraining on the plain text of the SFT *train* chats
(no chat template): it learns both languages, while the chat format is left for the SFT quickstart to teach.
The DPO data is never seen, so preference tuning still has something to teach.
Everything is deterministic for a given `--seed`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen2's pre-tokenizer split (letters in runs, digits one at a time, punctuation and whitespace apart), except
# that each Han character stands alone: on a corpus this small, Chinese letter runs would otherwise merge into
# whole-sentence tokens, making Chinese answers 2 tokens against 9 for English and memorising validation sentences.
SPLIT_PATTERN = (
    r"\p{Han}|(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[^\P{L}\p{Han}]+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEMO_DIR = Path("assets/demo")


def _load_demo_texts(demo_dir: Path) -> tuple[list[list[dict]], list[str]]:
    """SFT train conversations (for pretraining) and every message string in the demo data (for the tokenizer).

    Only the demo data: a tokenizer trained on, say, the README would change with every edit of the prose.
    """
    if not (demo_dir / "sft_train.jsonl").exists():
        sys.path.insert(0, str(Path(__file__).parent))
        import make_demo_data

        make_demo_data.main(["--output", str(demo_dir)])
    conversations, texts = [], []
    for path in sorted(demo_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            messages = record.get("messages") or record["prompt"] + record["chosen"] + record["rejected"]
            texts += [m["content"] for m in messages]
            if path.name == "sft_train.jsonl":
                conversations.append(record["messages"])
    return conversations, texts


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with ChatML special tokens, wrapped so `save_pretrained` writes standard files."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD,
        extra_special_tokens=[IM_START],
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def check_tokenizer(tokenizer: PreTrainedTokenizerFast, conversation: list[dict]) -> None:
    """The properties the data pipeline relies on: prefix-stable rendering, offsets, lossless round trips."""
    for k in range(1, len(conversation)):
        shorter = tokenizer.apply_chat_template(conversation[:k], tokenize=False)
        longer = tokenizer.apply_chat_template(conversation[: k + 1], tokenize=False)
        assert longer.startswith(shorter), "rendering messages[:k] must prefix messages[:k+1]"
        if conversation[k]["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(conversation[:k], tokenize=False, add_generation_prompt=True)
            assert longer.startswith(prompt), "the generation prompt must prefix the rendered assistant turn"
    sample = "Hello 世界! 龘靐齉 🙂 naïve\ttabs\n<|im_end|>"  # includes characters the BPE never saw
    encoding = tokenizer(sample, return_offsets_mapping=True, add_special_tokens=True)
    assert tokenizer.is_fast and len(encoding["offset_mapping"]) == len(encoding["input_ids"])
    assert tokenizer.decode(encoding["input_ids"]) == sample, "byte-level decoding must round-trip"
    assert encoding["input_ids"][-1] == tokenizer.eos_token_id, "special tokens must not be split"


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    )
    return model


def pretrain(model: LlamaForCausalLM, stream: torch.Tensor, steps: int, seed: int, batch_size: int = 16,
             seq_len: int = 256, lr: float = 3e-3, warmup: int = 30) -> list[float]:  # fmt: skip
    """Next-token prediction on random windows of one packed token stream; linear warmup then cosine decay."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step == 1 or step % 50 == 0 or step == steps:
            print(f"step {step:4d}  loss {loss.item():.3f}  lr {schedule.get_last_lr()[0]:.2e}")
    model.eval()
    return losses


def _greedy_demo(out: Path) -> None:
    """Reload through the Auto classes, as a user would, and answer one English and one Chinese training question."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    for question in ("What is the capital of Italy?", "羊怎么叫？"):
        input_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        print(f"{question!r} -> {tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)!r}")


def _portable_tokenizer_class(config_path: Path) -> None:
    """Name the generic fast-tokenizer class, which transformers 4.x and 5.x (and so vLLM) both resolve."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("assets/tiny-chat"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args(argv)
    start = time.perf_counter()

    conversations, texts = _load_demo_texts(DEMO_DIR)
    tokenizer = build_tokenizer(texts, args.vocab_size)
    check_tokenizer(tokenizer, max(conversations, key=len))
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in (PAD, IM_START, IM_END)}
    print(f"tokenizer: {len(tokenizer)} tokens, special ids {special}")

    # Plain text, not the chat template: the base model learns both languages and the facts, while the chat
    # format (turn markers, stopping at <|im_end|>) is left for the SFT quickstart to teach.
    plain = ["\n".join(m["content"] for m in c) for c in conversations]
    ids = tokenizer(plain, add_special_tokens=False)["input_ids"]
    stream = torch.tensor([t for conv in ids for t in [*conv, tokenizer.pad_token_id]], dtype=torch.long)
    model = build_model(tokenizer, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters; pretraining on {len(stream)} tokens")
    losses = pretrain(model, stream, args.steps, args.seed)
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    args.output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output, safe_serialization=True)
    tokenizer.save_pretrained(args.output)
    _portable_tokenizer_class(args.output / "tokenizer_config.json")
    _greedy_demo(args.output)
    size = sum(f.stat().st_size for f in args.output.iterdir()) / 2**20
    print(f"wrote {args.output} ({size:.1f} MB) in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
