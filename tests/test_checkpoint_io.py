"""A job SIGKILLed while it saves never leaves a checkpoint that fails to load, and the CLI writes that way.

The writer is a real ``Trainer`` with ``ModelCheckpoint(save_last=True)`` saving a 32 MB checkpoint every step,
killed at a random moment after it started saving, as soon as a file is seen half written. Its ``$TMPDIR`` is put
on another filesystem when there is one (``/dev/shm``): there, Lightning's own write is a copy into the final
path, and this test fails with it on the first kill (see lit_align/checkpoint_io.py).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_align.checkpoint_io import AtomicCheckpointIO

from .checkpoint_writer import BALLAST_ELEMENTS
from .conftest import ROOT
from .kill_during_save import kill_during_saves

BALLAST_BYTES = BALLAST_ELEMENTS * 4
WRITER = ["-m", "tests.checkpoint_writer"]


def _writer_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        scratch = shm / f"lit_align_test_{os.getpid()}"
        scratch.mkdir(exist_ok=True)
        env["TMPDIR"] = str(scratch)
    return env


def _checkpoints(directory: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in directory.glob("*.ckpt")}


def _partly_written(directory: Path) -> bool:
    """A file in the directory holds less than the ballast alone: a save is under way."""
    for entry in os.scandir(directory):
        try:
            size = entry.stat().st_size
        except FileNotFoundError:  # renamed or deleted since the scan
            continue
        if 0 < size < BALLAST_BYTES:
            return True
    return False


def _assert_all_load(directory: Path) -> None:
    for path in directory.glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)  # raises on a truncated file
        ballast = checkpoint["state_dict"]["ballast"]
        assert ballast.numel() == BALLAST_ELEMENTS and bool((ballast == checkpoint["global_step"]).all()), path.name


@pytest.mark.slow
def test_sigkill_while_saving_never_leaves_a_broken_checkpoint(tmp_path):
    out = tmp_path / "checkpoints"
    out.mkdir()
    env = _writer_env(tmp_path)

    def check() -> None:
        _assert_all_load(out)
        assert (out / "last.ckpt").is_file()

    writer = [*WRITER, str(out), "1000000", "file"]
    killed_mid_write = kill_during_saves(
        writer, env, saved=lambda: _checkpoints(out), saving=lambda: _partly_written(out), check=check
    )
    assert killed_mid_write, "no kill landed during a write: the test did not test anything"

    # The next run deletes what the killed writes left behind.
    subprocess.run([sys.executable, *WRITER, str(out), "2", "file"], env=env, check=True, capture_output=True)
    assert not list(out.glob("*.tmp"))
    _assert_all_load(out)
    if "TMPDIR" in env:
        assert not list(Path(env["TMPDIR"]).glob("tmp*"))  # nothing was staged there either
        Path(env["TMPDIR"]).rmdir()


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception, match="pickle"):
        io.save_checkpoint({"step": 2, "unpicklable": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_the_cli_saves_checkpoints_atomically(monkeypatch):
    from lit_align.cli import AlignCLI
    from lit_align.data.datamodule import AlignDataModule
    from lit_align.modules.base import AlignModule

    monkeypatch.setattr("sys.argv", ["lit_align"])
    cli = AlignCLI(
        AlignModule,
        AlignDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        run=False,
        args=["--config", str(ROOT / "configs" / "quickstart" / "sft.yaml"), "--trainer.logger", "false"],
    )
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
