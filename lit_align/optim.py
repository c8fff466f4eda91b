"""Learning-rate schedules and optimizer parameter groups, as users of the HF Trainer and TRL expect them.

The schedule is a pure function of the step so it can be checked by hand and resumes exactly: the
scheduler's only state is the step counter Lightning already checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn


@dataclass
class LRSchedule:
    """Warmup followed by a decay to ``min_lr_ratio`` times the peak learning rate."""

    kind: Literal["cosine", "linear", "constant"] = "cosine"
    """Shape after warmup."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup from 0; when 0, ``warmup_ratio`` decides."""
    warmup_ratio: float = 0.0
    """Warmup as a fraction of all optimizer steps (used when ``warmup_steps`` is 0)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak."""

    def warmup_for(self, total_steps: int) -> int:
        return self.warmup_steps or math.ceil(self.warmup_ratio * total_steps)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str = "cosine", min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Warmup: ``(step + 1) / warmup_steps`` so the first update already moves. After warmup, with
    ``p = (step - warmup) / (total - warmup)`` clipped to [0, 1]:
    cosine ``m + (1 - m) * 0.5 * (1 + cos(pi * p))``, linear ``m + (1 - m) * (1 - p)``, constant ``1``.
    Example: total 100, warmup 10, cosine, m = 0: step 4 -> 0.5, step 10 -> 1.0, step 55 -> 0.5.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif kind == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; expected cosine, linear or constant")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def parameter_groups(model: nn.Module) -> list[dict]:
    """Trainable parameters split so biases and norm weights (1-D tensors) get no weight decay.

    The decayed group keeps the optimizer's own ``weight_decay``; the other sets it to 0. An empty group is left
    out (DeepSpeed drops it, and the learning-rate schedule must count the groups as the optimizer does).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            shape = getattr(param, "ds_shape", param.shape)  # ZeRO-3 partitions every tensor to a 1-D slice
            (decay if len(shape) >= 2 else no_decay).append(param)
    groups = [{"params": decay}] if decay else []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
