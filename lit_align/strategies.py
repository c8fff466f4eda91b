"""Lightning's sharded strategies, with checkpoint directories that are complete or absent.

FSDP2 (``ModelParallelStrategy``) and DeepSpeed save a checkpoint as a directory of per-rank shard files and
bypass ``CheckpointIO`` (so ``AtomicCheckpointIO`` never sees them). Saving over an existing ``last.ckpt``
rewrites its files in place: a job killed part-way (a SLURM preemption, a node failure) leaves old shards beside
new ones under one metadata file, a checkpoint that fails to load or, worse, loads a mix of two steps.

These subclasses change only that: every rank writes into ``.<name>.partial`` beside the target, all ranks wait,
and rank zero moves the finished directory into place (the old one is renamed aside first and deleted after,
and the rename is fsynced). A kill during the write leaves the previous checkpoint untouched and a ``.partial``
directory that the next job's first save deletes; a checkpoint that the top-k policy removes is renamed aside
before it is deleted. The one unprotected moment is between the two renames, when the previous checkpoint sits
under ``.<name>.old``: loading ``<name>`` then, or the next job's first save, moves it back. Checkpoints must be
on a filesystem every rank shares, as Lightning's own metadata file (written by rank zero) already requires.

Use them as Lightning's, with the same arguments: ``configs/strategy/fsdp.yaml`` and ``deepspeed_zero*.yaml``.

``release_engine`` is for ``trainer.validate`` followed by ``trainer.fit`` under DeepSpeed (the CLI's
``--validate_before_training``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import strategies
from typing_extensions import override

from lit_align.checkpoint_io import fsync_directory


def move_into_place(finished: Path, target: Path) -> None:
    """Replace ``target`` (a directory, a file, or nothing) by the directory ``finished``."""
    aside = target.with_name(f".{target.name}.old")
    _remove(aside)
    if target.exists():
        os.rename(target, aside)
    os.rename(finished, target)
    fsync_directory(str(target.parent))
    _remove(aside)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def clean_up_after_killed_saves(directory: Path) -> None:
    """Delete what saves and deletions killed part-way left in ``directory``; a checkpoint left under ``.<name>.old``
    (killed between the two renames of `move_into_place`) goes back to its name."""
    for leftover in directory.glob(".*.ckpt.*"):
        name, _, kind = leftover.name[1:].rpartition(".")
        if kind == "old" and not (directory / name).exists():
            os.rename(leftover, directory / name)
        elif kind in ("old", "partial", "deleted"):
            _remove(leftover)


class _AtomicDirectorySave:
    """Mixin for a strategy whose ``save_checkpoint`` writes a directory on every rank."""

    _cleaned_directories: set[Path] | None = None

    def _saves_directories(self) -> bool:
        return True

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None) -> None:
        if not self._saves_directories():
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        target = Path(self.broadcast(str(filepath)))
        partial = target.with_name(f".{target.name}.partial")
        if self.is_global_zero:
            if self._cleaned_directories is None:
                self._cleaned_directories = set()
            if target.parent not in self._cleaned_directories:  # once per directory and job
                clean_up_after_killed_saves(target.parent)
                self._cleaned_directories.add(target.parent)
            _remove(partial)
        self.barrier("lit_align.checkpoint.clean")
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier("lit_align.checkpoint.written")
        if self.is_global_zero:
            move_into_place(partial, target)
        self.barrier("lit_align.checkpoint.moved")

    @override
    def load_checkpoint(self, checkpoint_path: _PATH, *args: Any, **kwargs: Any) -> dict[str, Any]:
        path = Path(self.broadcast(str(checkpoint_path)))
        aside = path.with_name(f".{path.name}.old")
        if self.is_global_zero and not path.exists() and aside.is_dir():
            os.rename(aside, path)  # killed between the two renames of move_into_place
        self.barrier("lit_align.checkpoint.restored")
        return super().load_checkpoint(checkpoint_path, *args, **kwargs)

    @override
    def remove_checkpoint(self, filepath: _PATH) -> None:
        """A directory is renamed aside before it is deleted, so a kill mid-deletion leaves no half checkpoint."""
        path = Path(filepath)
        if not (self.is_global_zero and path.is_dir()):
            super().remove_checkpoint(filepath)
            return
        doomed = path.with_name(f".{path.name}.deleted")
        _remove(doomed)
        os.rename(path, doomed)
        shutil.rmtree(doomed)


class ModelParallelStrategy(_AtomicDirectorySave, strategies.ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` (FSDP2 here), saving checkpoint directories atomically."""

    def _saves_directories(self) -> bool:
        return self._save_distributed_checkpoint


class DeepSpeedStrategy(_AtomicDirectorySave, strategies.DeepSpeedStrategy):
    """Lightning's ``DeepSpeedStrategy``, saving checkpoint directories atomically."""


def release_engine(strategy) -> None:
    """Take the hooks of the DeepSpeed engine that ``trainer.validate`` built off the model, so the engine that
    ``trainer.fit`` builds next on the same model is the only one tracing its ZeRO-3 parameter fetches (two
    engines' hooks on one model fail at the first training step with ``pop from an empty deque``)."""
    if not isinstance(strategy, strategies.DeepSpeedStrategy):
        return
    engine = strategy.model
    if hasattr(engine, "destroy"):
        engine.destroy()


def sharded(strategy) -> bool:
    """FSDP, FSDP2 (``ModelParallelStrategy``) or DeepSpeed stage 3: no rank holds the whole weights."""
    return isinstance(strategy, (strategies.FSDPStrategy, strategies.ModelParallelStrategy)) or getattr(
        strategy, "zero_stage_3", False
    )
