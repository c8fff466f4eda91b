"""The non-finite policy every module shares: no NaN or infinity ever reaches the weights, on any rank.

A mixin of `AlignModule` (``on_nonfinite_loss`` and ``max_skipped_fraction`` are its constructor arguments); kept
apart because its one job, agreeing across ranks on what a NaN does, has nothing to do with loading models or
writing checkpoints.

Three checks, each agreed on by every rank:

- the loss of every training batch (``checked_loss``): ``stop`` raises; ``skip`` drops the batch and counts it,
  and raises once more than ``max_skipped_fraction`` of the last ``SKIP_WINDOW`` batches were dropped (a run that
  skips that often has diverged: skipping would only hide it until the end, when the export is garbage);
- the gradients before every optimizer step: a finite loss can still give an infinite gradient, which gradient
  clipping turns into NaN (``inf * 0``), and the step would write it into every weight. Not checked when a loss
  scaler owns overflow (fp16 mixed precision: the scaler skips such steps and lowers its scale by design);
- the trainable weights after every optimizer step (an update can overflow, e.g. fp16 weights with a huge learning
  rate), before any checkpoint callback can save them.

Under either policy a non-finite gradient or weight raises: there is no batch to skip that would undo it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import torch

log = logging.getLogger(__name__)

SKIP_WINDOW = 50
"""Batches over which ``max_skipped_fraction`` is counted (all batches since the start while there are fewer)."""

ADVICE = (
    "Usual causes: a learning rate too high for this model (lower model.init_args.optimizer.init_args.lr), "
    "no gradient clipping (set trainer.gradient_clip_val, e.g. 1.0), fp16 overflow (use trainer.precision "
    "bf16-mixed where the hardware has bf16, or 32-true), or extreme or broken examples in the data."
)


def skip_limit(max_skipped_fraction: float, window: int = SKIP_WINDOW) -> int:
    """Most skipped batches allowed among the last ``window``: ``floor(max_skipped_fraction * window)``.

    The denominator is the window, not the batches seen so far, so a single NaN at the first batch is not
    "100% skipped": with the default 0.1 a run may skip 5 of any 50 batches (and 5 in all while it is shorter).
    """
    return math.floor(max_skipped_fraction * window + 1e-9)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this rank holds: an FSDP2 shard, a ZeRO-3 partition, or the tensor itself."""
    if hasattr(tensor, "to_local"):  # DTensor
        return tensor.to_local()
    return getattr(tensor, "ds_tensor", tensor)  # a ZeRO-3 partitioned parameter keeps its slice here


def nonfinite_names(named_tensors: Iterable[tuple[str, torch.Tensor | None]]) -> list[str]:
    """Names of the floating-point tensors (this rank's part of them) holding a NaN or an infinity.

    ``aminmax`` reduces without allocating a tensor-sized mask (a 7B model's embedding would need 0.5 GB) and,
    unlike a sum or a norm, cannot overflow on finite values; NaN propagates through it. One host sync in all.
    """
    names, flags = [], []
    for name, tensor in named_tensors:
        if tensor is None:
            continue
        local = _local(tensor).detach()
        if local.numel() == 0 or not local.is_floating_point():
            continue
        low, high = torch.aminmax(local)
        names.append(name)
        flags.append(~(torch.isfinite(low) & torch.isfinite(high)))
    if not flags:
        return []
    bad = torch.stack([flag.to(flags[0].device) for flag in flags]).tolist()
    return [name for name, is_bad in zip(names, bad, strict=True) if is_bad]


def _first(names: list[str], total: int) -> str:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} of {total} trainable tensors, first: {shown}"


def _is_deepspeed(strategy) -> bool:
    """By name, so that importing this module does not import DeepSpeed (it prints a line when it loads)."""
    return any(cls.__name__ == "DeepSpeedStrategy" for cls in type(strategy).__mro__)


def _loss_scaler_owns_overflow(trainer) -> bool:
    """fp16 with a loss scaler: infinite gradients are expected now and then; the scaler skips those steps."""
    if getattr(trainer.precision_plugin, "scaler", None) is not None:
        return True
    return _is_deepspeed(trainer.strategy) and str(trainer.precision).startswith("16")


class NonFiniteLossPolicy:
    """``checked_loss`` for ``training_step`` and the optimizer-step hooks that go with it. The host sets
    ``on_nonfinite_loss`` (``stop`` or ``skip``) and ``max_skipped_fraction``, and calls ``reset_nonfinite_counts``
    in its constructor."""

    on_nonfinite_loss: str = "stop"
    max_skipped_fraction: float = 0.1

    def reset_nonfinite_counts(self) -> None:
        self.skipped_nonfinite_steps = 0
        self._recent_skips: deque[bool] = deque(maxlen=SKIP_WINDOW)
        self._window_batches = self._window_skips = 0

    def _is_sole_process(self) -> bool:
        """Whether Lightning lets ``training_step`` return None here (one process, not DeepSpeed)."""
        return self.trainer.world_size == 1 and not _is_deepspeed(self.trainer.strategy)

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
        step = self.trainer.global_step
        if bad and self.on_nonfinite_loss == "stop":
            value = loss.detach().float().max().item() if local_bad else "on another rank"
            raise FloatingPointError(f"non-finite loss ({value}) at step {step}, batch {batch_idx}. {ADVICE}")
        self._recent_skips.append(bool(bad))
        if bad:
            self.skipped_nonfinite_steps += 1
            self._window_skips += 1
            log.warning("skipped batch %d at step %d: non-finite loss", batch_idx, step)
            self._check_skip_share(step, batch_idx)
        self.log("train/skipped_nonfinite_steps", float(self.skipped_nonfinite_steps), on_step=True, on_epoch=False)
        if not bad:
            return loss
        if self._is_sole_process():
            return None  # Lightning then skips the backward pass
        # Lightning refuses None with several ranks, and DeepSpeed always. A zero that touches every trainable
        # weight runs the same backward and all-reduce on every rank and adds nothing to the gradients.
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def _check_skip_share(self, step: int, batch_idx: int) -> None:
        """Raise when the last ``SKIP_WINDOW`` batches hold more skipped ones than ``max_skipped_fraction`` allows.
        Every rank has the same window (the skip decisions were agreed), so every rank raises together."""
        skipped, limit = sum(self._recent_skips), skip_limit(self.max_skipped_fraction)
        if skipped <= limit:
            return
        raise FloatingPointError(
            f"{skipped} of the last {len(self._recent_skips)} training batches had a non-finite loss and were "
            f"skipped (now at step {step}, batch {batch_idx}); model.init_args.max_skipped_fraction "
            f"{self.max_skipped_fraction} allows at most {limit} in any {SKIP_WINDOW}. A run that skips this often "
            f"has diverged; skipping more would only hide it. {ADVICE} Raise max_skipped_fraction only if you know "
            "that some batches are bad."
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning runs this hook after the backward (and fp16 unscaling), before gradient clipping and the step.
        if self._window_batches and self._window_skips == self._window_batches:
            optimizer.zero_grad(set_to_none=True)  # weights without gradients are left alone by the optimizer
        self._window_batches = self._window_skips = 0
        if _loss_scaler_owns_overflow(self.trainer):
            return
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        bad = nonfinite_names((n, p.grad) for n, p in trainable)
        if self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            where = _first(bad, len(trainable)) if bad else "on another rank"
            raise FloatingPointError(
                f"non-finite gradient at step {self.trainer.global_step} ({where}) although the loss was finite; "
                f"the optimizer step was not taken, so the weights are still finite. {ADVICE}"
            )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's step, then a look at the trainable weights, before any checkpoint callback can save them."""
        step = self.trainer.global_step
        super().optimizer_step(*args, **kwargs)
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        bad = nonfinite_names(trainable)
        if self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            where = _first(bad, len(trainable)) if bad else "on another rank"
            raise FloatingPointError(
                f"non-finite weights after the optimizer step at step {step} ({where}): the update overflowed. "
                f"Nothing from this step was saved. {ADVICE}"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skipped_nonfinite_steps"] = self.skipped_nonfinite_steps
        checkpoint["recent_nonfinite_skips"] = list(self._recent_skips)
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_nonfinite_steps = checkpoint.get("skipped_nonfinite_steps", 0)
        self._recent_skips = deque(checkpoint.get("recent_nonfinite_skips", []), maxlen=SKIP_WINDOW)
        super().on_load_checkpoint(checkpoint)
