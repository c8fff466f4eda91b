"""The policy in eval mode for a moment (generation in a callback or inside a training step), put back exactly as
it was afterwards: every module's own train/eval flag, since LoRA layers and frozen parts differ."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lightning.pytorch import Trainer


@contextmanager
def policy_in_eval_mode(policy: torch.nn.Module, trainer: Trainer | None = None) -> Iterator[None]:
    """``policy`` in eval mode, without gradients, under the trainer's validation precision; every module's
    train/eval mode is put back afterwards (module by module: LoRA and frozen parts differ)."""
    modes = {module: module.training for module in policy.modules()}
    context = trainer.precision_plugin.val_step_context() if trainer is not None else nullcontext()
    try:
        policy.eval()
        with torch.no_grad(), context:
            yield
    finally:
        for module, training in modes.items():
            module.training = training
