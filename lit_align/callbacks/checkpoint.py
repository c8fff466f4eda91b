"""``ModelCheckpoint`` whose ``last.ckpt`` is always the run's latest state: the CLI's ``checkpoint:`` section.

Lightning 2.6's ``ModelCheckpoint`` with a ``monitor`` writes ``last.ckpt`` only when it writes a top-k checkpoint
at the same step: ``on_validation_end`` saves last "only if a checkpoint was actually saved in this step", and
``on_train_end`` only when nothing at all was saved. A validation that does not improve the monitored metric
therefore leaves ``last.ckpt`` at the last improvement: the DPO quickstart ended at step 200 with ``last.ckpt``
at step 150, so ``scripts/export.py`` from it gave another model than ``hf/``, and a killed run resumed from the
last improvement instead of its last save.

Here every event where the top-k policy is asked (each validation, or each ``every_n_train_steps``, as configured)
also writes ``last.ckpt``, improved or not. So does the final training batch when no validation follows it
(``max_steps`` between two validations, a stop without validation data): written inside the batch, like
Lightning's step-based checkpoints, it resumes mid-epoch exactly where the run stopped, which a checkpoint written
in ``on_train_end`` would not (Lightning counts the epoch as finished there, and a resumed run starts the next
epoch's data). ``on_train_end`` writes it only if neither happened (epoch-based runs, where that is right). The
top-k files are unchanged.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from typing_extensions import override


def _validation_follows(trainer) -> bool:
    """Whether Lightning validates right after the current training batch (then ``on_validation_end`` saves).
    Lightning's own decision, a private method: when it cannot be asked, say no, and the batch end saves."""
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher)) and not loop._skip_next_val
    except Exception:  # noqa: BLE001 (another Lightning version: one extra save is the safe side)
        return False


class AlignModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (same arguments), with ``last.ckpt`` rewritten at every save event and at
    the end of training. ``save_last: link`` links to the newest top-k file when one was written at this step and
    writes ``last.ckpt`` itself when not (a link to an older file would not be the last state)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_written_at: int | None = None  # global step of this session's latest last.ckpt
        self._first_batch = False

    @override
    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        self._save_last_checkpoint(trainer, monitor_candidates)

    @override
    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        if not self.save_last or self._last_written_at == trainer.global_step:
            return  # Lightning asks again right after top-k, which has written it already
        if self.save_last == "link" and self._last_global_step_saved != trainer.global_step:
            self.save_last = True  # nothing of this step to link to: write the file
            try:
                super()._save_last_checkpoint(trainer, monitor_candidates)
            finally:
                self.save_last = "link"
        else:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_written_at = trainer.global_step

    def _may_save(self, trainer) -> bool:
        return (
            bool(self.save_last)
            and trainer.global_step > 0
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and trainer.state.fn == TrainerFn.FITTING
        )

    @override
    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        self._first_batch = True

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Lightning 2.6 resumes the logging step one behind from a checkpoint written in the validation that it
        # runs because the run is stopping (`should_stop` between two scheduled validations, e.g. `max_time`):
        # it replays the step's increment only when the restored step is a scheduled validation. Every metric of
        # the resumed run would then be logged one step early, the first on top of the stopped run's last. With
        # one optimizer stepped automatically, the logging step equals the global step at every batch start.
        if not self._first_batch:
            return
        self._first_batch = False
        loop = trainer.fit_loop.epoch_loop
        one_optimizer = pl_module.automatic_optimization and len(trainer.optimizers) == 1
        if one_optimizer and loop._batches_that_stepped == trainer.global_step - 1:
            loop._batches_that_stepped = trainer.global_step

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        max_steps_reached = 0 < trainer.max_steps <= trainer.global_step
        if (max_steps_reached or trainer.should_stop) and self._may_save(trainer) and not _validation_follows(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        if self._may_save(trainer) and self._last_written_at != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)
