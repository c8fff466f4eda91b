"""Checkpoint files that are complete or absent, never truncated, so a killed job can always resume.

Lightning 2.6's ``TorchCheckpointIO`` serialises the checkpoint into memory, writes it to a file made by
``tempfile.mkstemp()`` (in ``$TMPDIR``, not beside the checkpoint) and ``shutil.move``s it into place. When both
are on one filesystem the move is an atomic rename. When they are not (a local or RAM ``/tmp`` with checkpoints
on shared storage, the usual cluster layout) the move is a copy into the final path: a job killed during the
copy leaves a truncated ``last.ckpt`` where the good one was, and an orphaned checkpoint-sized file in
``$TMPDIR``. Nothing is fsynced either, so after a power cut even a renamed file can come back empty.

``AtomicCheckpointIO`` writes ``<path>.tmp`` beside the target, fsyncs it, ``os.replace``s it over the target and
fsyncs the directory: a reader finds the old checkpoint or the new one. A job killed mid-write leaves only a
``*.ckpt.tmp``, which no resume looks at and which the next run deletes at its first save into that directory. It
also streams ``torch.save`` straight to the file instead of holding a second copy of the checkpoint in memory.
Remote paths (``s3://`` ...) keep Lightning's own write. The CLI installs it through ``trainer.plugins``.
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Any

import torch
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic and durable (temp file in the same directory, fsync,
    ``os.replace``)."""

    def __init__(self) -> None:
        super().__init__()
        self._cleaned: set[str] = set()

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        fs, local_path = url_to_fs(str(path))
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        directory = os.path.dirname(os.path.abspath(local_path))
        os.makedirs(directory, exist_ok=True)
        if directory not in self._cleaned:
            # Left by a killed job (this process has not written here yet); each is as large as a checkpoint.
            for stale in glob.glob(os.path.join(glob.escape(directory), "*.ckpt.tmp")):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
            self._cleaned.add(directory)
        partial = local_path + ".tmp"  # not *.ckpt: nothing that looks for checkpoints picks it up
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, local_path)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise
        fsync_directory(directory)


def fsync_directory(directory: str) -> None:
    """Make the rename itself durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
