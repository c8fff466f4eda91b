"""Per-token log-probabilities of labels: from logits, or from hidden states in chunks, never holding the
batch's full-vocabulary logits.

Position ``t`` predicts label ``t + 1``; label -100 takes no loss. Both functions return ``(logps, mask)``,
``[B, T - 1]`` each, ``logps`` zero where the mask is off, and agree to float32 rounding.

Why chunks: ``[B, T, V]`` logits in float32 are 8 pairs × 512 tokens × 151,936 (Qwen's vocabulary) × 4 bytes
= 2.5 GB, and autograd keeps them (and the softmax of the backward) alive. `chunked_token_logps` applies the
output head only at label positions (prompt and padding never reach it), ``chunk_size`` positions at a time,
in float32 only inside a chunk, and recomputes each chunk's logits in the backward pass instead of keeping them:
peak memory grows with ``chunk_size × V``, not with ``B × T × V``. The price is one more head forward per
label position in training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from lit_align.constants import IGNORE_INDEX


def _targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return targets.masked_fill(~mask, 0), mask


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token from ``[B, T, V]`` logits, and the mask of positions with a label.

    Computed as ``gather(logits) - logsumexp(logits)``, so no second ``[B, T, V]`` tensor of log-softmax is
    stored."""
    targets, mask = _targets(labels)
    logits = logits[:, :-1, :].float()
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return (picked - torch.logsumexp(logits, dim=-1)) * mask, mask


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``H = -sum(p * log p)`` of the next-token distribution ``p = softmax(z)`` at each position, in nats
    (``entr`` counts a probability of 0 as 0, and no term grows with the size of the logits)."""
    return torch.special.entr(logits.float().softmax(-1)).sum(-1)


@torch.no_grad()
def chunked_token_entropy(
    hidden: torch.Tensor, labels: torch.Tensor, logits_of: Callable[[torch.Tensor], torch.Tensor], chunk_size: int
) -> torch.Tensor:
    """``[B, T - 1]`` entropy of the predicted distribution at every label position (0 elsewhere), a chunk of the
    head's logits at a time and without gradients: a diagnostic (GRPO's ``entropy``), one more head forward."""
    _, mask = _targets(labels)
    selected = hidden[:, :-1][mask]
    pieces = [
        entropy_from_logits(logits_of(selected[s : s + chunk_size])) for s in range(0, selected.shape[0], chunk_size)
    ]
    values = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    return torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device).masked_scatter(mask, values.float())


def _chunk_logps(hidden: torch.Tensor, targets: torch.Tensor, logits_of: Callable) -> torch.Tensor:
    logits = logits_of(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def chunked_token_logps(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    logits_of: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
    recompute: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logps` of the logits ``logits_of(hidden)`` without ever computing them for the whole batch.

    ``hidden`` is ``[B, T, H]``, the final hidden states (after the last norm); ``logits_of`` maps ``[n, H]`` to
    ``[n, V]`` (the output head, with any scaling the architecture applies). Under autograd every chunk is
    checkpointed: only its ``[n, H]`` input is kept, its logits are recomputed in the backward pass (with the
    same autocast and random state, so dropout in a LoRA head replays). When every label position fits in one
    chunk, that chunk is kept instead (its memory is the bound anyway) and the head runs once, not twice. Without
    ``recompute`` autograd keeps every chunk's logits: only label positions still count, but memory grows with
    them."""
    targets, mask = _targets(labels)
    selected, selected_targets = hidden[:, :-1][mask], targets[mask]
    recompute = recompute and selected.shape[0] > chunk_size
    pieces = []
    for start in range(0, selected.shape[0], chunk_size):
        args = (selected[start : start + chunk_size], selected_targets[start : start + chunk_size], logits_of)
        if recompute and torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(*args))
    values = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    logps = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device).masked_scatter(mask, values)
    return logps, mask
