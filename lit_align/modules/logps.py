"""Per-token and per-sequence log-probabilities from logits and -100-masked labels."""

from __future__ import annotations

import torch

from lit_align.constants import IGNORE_INDEX


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token and the mask of positions that carry a label.

    ``logits`` is ``[B, T, V]`` for inputs ``[B, T]``; position ``t`` predicts label ``t + 1``. Returns
    ``(logps, mask)``, both ``[B, T - 1]``, with ``logps`` zero where the mask is off. Computed as
    ``gather(logits) - logsumexp(logits)`` so no second ``[B, T, V]`` tensor of log-softmax is stored.
    """
    logits = logits[:, :-1, :]
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe_targets = targets.masked_fill(~mask, 0)
    logits = logits.float()
    picked = torch.gather(logits, -1, safe_targets.unsqueeze(-1)).squeeze(-1)
    logps = (picked - torch.logsumexp(logits, dim=-1)) * mask
    return logps, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of label log-probs per sequence and the number of label tokens, both ``[B]``."""
    logps, mask = token_logps(logits, labels)
    return logps.sum(-1), mask.sum(-1)
