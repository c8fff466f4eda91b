"""Label log-probabilities of a causal LM's forward, computed from its final hidden states in chunks.

`label_token_logps` runs the model as usual (every wrapper and hook of PEFT, FSDP2 or DeepSpeed sees a normal
forward) but asks it for the logits of the last position only (``logits_to_keep=1``), takes the final hidden
states from its decoder with a forward hook, and applies the output head itself, chunk by chunk, at label
positions only (`lit_align.models.token_logps.chunked_token_logps`).

The head is ``model.get_output_embeddings()`` (tied or not; with LoRA on it, the LoRA layer), followed by the
logit transform of the architecture: Gemma 2/3's final soft-capping, Cohere's ``logit_scale``, Granite's
``logits_scaling``. That this reproduces the model's own logits is checked, not assumed: the first time a model is
used, the head applied to the last position's hidden states must equal the logits the model returned for it, or
the run stops naming the architecture. A model whose forward takes no ``logits_to_keep`` (old remote code)
gets the plain path: full logits, with a warning. Under DeepSpeed ZeRO-3 chunks are not recomputed in the backward
pass (see below), so memory there grows with the label positions, though never with prompt or padding positions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_align.models.token_logps import (
    chunked_token_entropy,
    chunked_token_logps,
    entropy_from_logits,
    token_logps,
)

CHUNK_BYTES = 256 * 2**20
"""Default float32 budget of one chunk's logits: 441 positions at Qwen's 151,936-token vocabulary."""

_CHECKED = "_lit_align_head_checked"


def default_chunk_size(vocab_size: int) -> int:
    """Positions per chunk whose float32 logits fit in `CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (4 * vocab_size))


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _text_config(model: nn.Module):
    config = _base(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def logits_transform(config) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the architecture does to the head's output before returning logits (identity for most)."""
    cap = getattr(config, "final_logit_softcapping", None)
    multiply = getattr(config, "logit_scale", None)
    divide = getattr(config, "logits_scaling", None)

    def transform(logits: torch.Tensor) -> torch.Tensor:
        if multiply is not None:
            logits = logits * multiply
        if divide is not None:
            logits = logits / divide
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform


def supports_hidden_path(model: nn.Module) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` and it has a decoder apart from its head."""
    base = _base(model)
    if "logits_to_keep" not in inspect.signature(type(base).forward).parameters:
        return False
    try:
        decoder = base.get_decoder()
    except (AttributeError, ValueError, NotImplementedError):
        return False
    return decoder is not base and base.get_output_embeddings() is not None


def final_hidden_states(model: nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden [B, T, H], logits of the last position [B, 1, V])`` from one ordinary forward of ``model``."""
    captured = []

    def keep(module, args, output):
        captured.append(output[0])

    handle = _base(model).get_decoder().register_forward_hook(keep)
    try:
        last_logits = model(**inputs, logits_to_keep=1).logits
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"the decoder of {type(_base(model)).__name__} ran {len(captured)} times in one forward")
    return captured[0], last_logits


def check_head(model: nn.Module, hidden: torch.Tensor, last_logits: torch.Tensor, logits_of: Callable) -> None:
    """Stop if the head applied here does not give the model's own logits (once per model)."""
    if getattr(model, _CHECKED, False):
        return
    with torch.no_grad():
        ours = logits_of(hidden[:, -1]).float()
        theirs = last_logits[:, -1].float()
        error = (ours - theirs).abs().max().item()
        bound = 1e-3 * (1.0 + theirs.abs().max().item())
    if not error <= bound:
        name = type(_base(model)).__name__
        raise ValueError(
            f"{name}'s logits are not its output head applied to its final hidden states as lit_align computes them "
            f"(largest difference {error:.3g}): the architecture transforms its logits in a way lit_align does not "
            "know. Set model.init_args.logps_chunk_size: 0 to compute log-probs from the full logits."
        )
    setattr(model, _CHECKED, True)


def label_token_logps(
    model: nn.Module,
    labels: torch.Tensor,
    inputs: dict,
    chunk_size: int | None = None,
    entropy: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, ...]:
    """``(logps, mask)``, ``[B, T - 1]`` each, of ``labels`` under ``model(**inputs)`` (see the module docstring).

    ``chunk_size``: label positions per chunk; ``None`` sizes chunks by the vocabulary (`default_chunk_size`);
    0 takes the full logits from the model, as before chunking existed. With ``entropy``, a third tensor: the
    entropy of the model's next-token distribution at each label position (no gradient; 0 elsewhere).
    ``temperature``: the distribution ``softmax(logits / temperature)`` that sampling at that temperature draws
    from (GRPO scores its samples under it, as TRL does)."""
    if chunk_size == 0 or not supports_hidden_path(model):
        if chunk_size != 0 and not getattr(model, _CHECKED, False):
            rank_zero_warn(
                f"{type(_base(model)).__name__} takes no logits_to_keep or has no separate decoder: log-probs come "
                "from its full logits, which costs batch × length × vocabulary floats"
            )
            setattr(model, _CHECKED, True)
        logits = model(**inputs).logits
        if temperature != 1.0:
            logits = logits / temperature
        logps, mask = token_logps(logits, labels)
        if not entropy:
            return logps, mask
        with torch.no_grad():
            return logps, mask, entropy_from_logits(logits[:, :-1]) * mask
    head, transform = model.get_output_embeddings(), logits_transform(_text_config(model))

    def logits_of(states: torch.Tensor) -> torch.Tensor:
        return transform(head(states))

    training = head.training
    head.train(training and getattr(model, _CHECKED, False))  # dropout in a LoRA head would fail the check
    try:
        hidden, last_logits = final_hidden_states(model, inputs)
        check_head(model, hidden, last_logits, logits_of)
    finally:
        head.train(training)
    size = chunk_size or default_chunk_size(_text_config(model).vocab_size)
    if temperature != 1.0:
        unscaled = logits_of

        def logits_of(states: torch.Tensor) -> torch.Tensor:
            return unscaled(states) / temperature

    # ZeRO-3 releases the head's weights after the forward, and the backward pass cannot re-gather them for a
    # recomputation (torch.utils.checkpoint sees an empty tensor): there, chunks keep their logits.
    partitioned = any(hasattr(p, "ds_id") for p in head.parameters())
    logps, mask = chunked_token_logps(hidden, labels, logits_of, size, recompute=not partitioned)
    if not entropy:
        return logps, mask
    return logps, mask, chunked_token_entropy(hidden.detach(), labels, logits_of, size)
