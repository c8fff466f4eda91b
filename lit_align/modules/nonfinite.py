"""The non-finite-loss policy every module shares: stop with a message, or skip the batch on every rank.

A mixin of `AlignModule` (``on_nonfinite_loss`` is its constructor argument); kept apart because its one job,
agreeing across ranks on what a NaN loss does, has nothing to do with loading models or writing checkpoints.
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

log = logging.getLogger(__name__)


class NonFiniteLossPolicy:
    """``checked_loss`` for ``training_step`` and the optimizer-step hook that goes with it. The host sets
    ``on_nonfinite_loss`` (``stop`` or ``skip``) and calls ``reset_nonfinite_counts`` in its constructor."""

    on_nonfinite_loss: str = "stop"

    def reset_nonfinite_counts(self) -> None:
        self.skipped_nonfinite_steps = 0
        self._window_batches = self._window_skips = 0

    def checked_loss(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        """What ``training_step`` returns: ``loss``, an error, or nothing at all for a NaN or infinite loss.

        Ranks agree first (one rank skipping while the others step would leave DDP's gradient all-reduce
        waiting forever), at the cost of one host sync per step. A skipped batch contributes no gradient; with
        gradient accumulation the other batches of its window still make their optimizer step, and when the
        whole window was skipped the weights and the optimizer's moments stay as they were (the step counter
        and the learning-rate schedule still advance).
        """
        local_bad = not bool(torch.isfinite(loss.detach()).all())
        bad = self.trainer.strategy.reduce_boolean_decision(local_bad, all=False)
        self._window_batches += 1
        if bad and self.on_nonfinite_loss == "stop":
            value = loss.detach().float().max().item() if local_bad else "on another rank"
            raise FloatingPointError(
                f"non-finite loss ({value}) at step {self.trainer.global_step}, batch {batch_idx}: lower the "
                "learning rate, check the data, or set model.init_args.on_nonfinite_loss: skip"
            )
        if bad:
            self.skipped_nonfinite_steps += 1
            self._window_skips += 1
            log.warning("skipped batch %d at step %d: non-finite loss", batch_idx, self.trainer.global_step)
        self.log("train/skipped_nonfinite_steps", float(self.skipped_nonfinite_steps), on_step=True, on_epoch=False)
        if not bad:
            return loss
        if self.trainer.world_size == 1 and not isinstance(self.trainer.strategy, DeepSpeedStrategy):
            return None  # Lightning then skips the backward pass
        # Lightning refuses None with several ranks, and DeepSpeed always. A zero that touches every trainable
        # weight runs the same backward and all-reduce on every rank and adds nothing to the gradients.
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._window_batches and self._window_skips == self._window_batches:
            optimizer.zero_grad(set_to_none=True)  # weights without gradients are left alone by the optimizer
        self._window_batches = self._window_skips = 0
