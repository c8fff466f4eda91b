"""Gradient clipping with a fused optimizer under ``bf16-mixed``.

Every recipe sets AdamW's ``fused: true`` (one kernel for all weights) and ``gradient_clip_val``. Lightning's
mixed-precision plugin refuses to clip for any optimizer that can unscale gradients inside its step (fused AdamW
can), because with float16's loss scaling the gradients are still scaled when clipping would run. ``bf16-mixed``
scales nothing (Lightning builds no ``GradScaler`` for it), so the gradients are true gradients at that point and
clipping is what it is in full precision; the refusal there only stopped every bf16 recipe at its first step.
This mixin clips those cases as full precision does, and turns the real conflict (``16-mixed``, loss scaling, a
fused optimizer, clipping) into a message that says what to change.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch.optim import Optimizer

from lit_align.checks import ConfigError


def unscales_in_step(optimizer: Optimizer) -> bool:
    """Whether ``optimizer`` takes the loss scale into its own step (torch's fused AdamW and Adam do)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


class FusedOptimizerClipping(LightningModule):
    """``configure_gradient_clipping`` that lets a fused optimizer clip under ``bf16-mixed``."""

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        plugin = self.trainer.precision_plugin
        fused_under_amp = isinstance(plugin, MixedPrecision) and unscales_in_step(optimizer)
        if not (fused_under_amp and gradient_clip_val):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        if plugin.scaler is not None:
            raise ConfigError(
                f"trainer.precision {plugin.precision} scales the loss, and a fused {type(optimizer).__name__} "
                "(optimizer init_args fused: true) unscales the gradients inside its step, so "
                "trainer.gradient_clip_val would clip scaled gradients. Set the optimizer's fused: false, or "
                "trainer.precision bf16-mixed."
            )
        algorithm = GradClipAlgorithmType(gradient_clip_algorithm or GradClipAlgorithmType.NORM)
        Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)  # as in full precision
