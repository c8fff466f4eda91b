"""Learning-rate schedules and optimizer parameter groups, as users of the HF Trainer and TRL expect them.

The schedule is a pure function of the step so it can be checked by hand and resumes exactly: the
scheduler's only state is the step counter Lightning already checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lit_align.checks import ConfigError, check_at_least, check_between, check_positive


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

    def __post_init__(self) -> None:
        # Refused when the run is built, not at the first step after the data and the model have loaded.
        key = "model.init_args.lr_schedule"
        if self.kind not in ("cosine", "linear", "constant"):
            raise ConfigError(f"{key}.kind must be cosine, linear or constant, got {self.kind!r}")
        check_at_least(f"{key}.warmup_steps", self.warmup_steps, 0)
        check_between(f"{key}.warmup_ratio", self.warmup_ratio, 0, 1, high_open=True, why=" (a share of all steps)")
        check_between(f"{key}.min_lr_ratio", self.min_lr_ratio, 0, 1, why=" (a share of the peak learning rate)")

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


def check_optimizer(optimizer) -> None:
    """Refuse an optimizer setting that cannot train, before any model is loaded.

    ``optimizer`` is what the CLI passes (a ``functools.partial`` of the class with its ``init_args``) or a class.
    The learning rate must be a finite number above 0 (torch accepts 0, which trains nothing and still ends with
    exit 0). A ``torch.optim`` optimizer is also built once on a dummy parameter, so torch's own checks (betas,
    eps, weight_decay) fail now; other optimizers (DeepSpeed's, bitsandbytes') may need a GPU to be built.
    """
    key = "model.init_args.optimizer.init_args"
    keywords = getattr(optimizer, "keywords", {}) or {}
    classes = [a for a in getattr(optimizer, "args", ()) if isinstance(a, type)]
    cls = classes[-1] if classes else getattr(optimizer, "func", optimizer)  # jsonargparse's partial, or a plain one
    if "lr" in keywords:
        lr = keywords["lr"]
        check_positive(f"{key}.lr", float(lr) if isinstance(lr, torch.Tensor) else lr, why=" (the learning rate)")
    if isinstance(cls, type) and cls.__module__.startswith("torch.optim"):
        try:
            optimizer([nn.Parameter(torch.zeros(1))])
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{key}: {cls.__name__} refuses these settings: {error}") from error
