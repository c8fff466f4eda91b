"""``PolicyProbe``: the base of callbacks that look at the policy being trained (generations, benchmark scores).

Both need the same care, and it lives here once: when to run (at the end of every validation and every N
optimizer steps, once per step, never in the sanity check or in the middle of gradient accumulation), where (on
rank zero, from the unwrapped policy, so not under FSDP, FSDP2 or DeepSpeed stage 3, where no rank holds the
whole weights), and leaving the run as it was: the random state of torch (CPU and CUDA), ``random`` and numpy is
saved before and restored after, and every module's train/eval mode is put back, so a run with a probe has the
same loss curve as one without.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lit_align.models.eval_mode import policy_in_eval_mode
from lit_align.strategies import sharded

__all__ = ["PolicyProbe", "policy_in_eval_mode", "preserved_rng", "sharded"]


class PolicyProbe(Callback):
    """Calls `probe` on rank zero at the end of every validation (``after_validation``) and every
    ``every_n_steps`` optimizer steps, at most once per ``trainer.global_step``, inside `preserved_rng`.

    Only one probe of a kind runs per trainer: with several, the last in ``trainer.callbacks`` runs and the others
    stand down with a warning. Subclasses implement `probe` and may refuse to start in `prepare`.
    """

    def __init__(self, every_n_steps: int, after_validation: bool = True) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 0:
            raise ValueError(f"every_n_steps must be an integer >= 0 (0: not on steps), got {every_n_steps!r}")
        if every_n_steps == 0 and not after_validation:
            raise ValueError(f"{type(self).__name__} would never run: set every_n_steps > 0 or after_validation")
        self.every_n_steps = every_n_steps
        self.after_validation = after_validation
        self._active = False
        self._seen_global_step: int | None = None
        self._probed_at: int | None = None
        self._log_dir: Path | None = None

    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        """Called on every rank once the probe may run; return False (after a warning) to stay off."""
        return True

    def probe(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        raise NotImplementedError

    # ---- hooks --------------------------------------------------------------------------------------------

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._active = False
        name = type(self).__name__
        # `trainer.log_dir` is a broadcast under DDP: every rank must ask, so ask here, not on rank zero alone.
        self._log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        same_kind = [cb for cb in trainer.callbacks if isinstance(cb, type(self))]
        if same_kind[-1] is not self:
            rank_zero_warn(f"Several {name} callbacks: only the last in trainer.callbacks runs")
        elif sharded(trainer.strategy):
            rank_zero_warn(f"{name} is off: running on rank zero alone needs unsharded weights (not FSDP/ZeRO-3)")
        elif getattr(pl_module, "tokenizer", None) is None or not hasattr(pl_module, "policy"):
            rank_zero_warn(f"{name} is off: the module has no `tokenizer` and `policy`")
        else:
            self._active = self.prepare(trainer, pl_module)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._seen_global_step = trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._seen_global_step:
            return  # mid-accumulation
        self._seen_global_step = step
        if self.every_n_steps > 0 and step % self.every_n_steps == 0:
            self._run(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.after_validation and not trainer.sanity_checking:
            self._run(trainer, pl_module)

    def _run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        if not (self._active and trainer.is_global_zero) or step == self._probed_at:
            return  # a validation at a step that has just been probed would repeat it
        self._probed_at = step
        with preserved_rng():
            self.probe(trainer, pl_module, step)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the torch (CPU and initialised CUDA), ``random`` and numpy generators on exit."""
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        import numpy as np

        numpy_state = np.random.get_state()
    except ImportError:
        np = numpy_state = None
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if np is not None:
            np.random.set_state(numpy_state)
