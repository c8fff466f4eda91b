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

from .conftest import ROOT
from .kill_during_save import kill_during_saves

BALLAST_BYTES = 8 * 1024 * 1024 * 4
WRITER = """
import sys
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lit_align.checkpoint_io import AtomicCheckpointIO


class Ballast(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.register_buffer("ballast", torch.randn(8 * 1024 * 1024))

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(10_000, 4), batch_size=1)


checkpoints = ModelCheckpoint(
    dirpath=sys.argv[1], save_last=True, every_n_train_steps=1, save_top_k=2, monitor="step", mode="max"
)
trainer = Trainer(
    max_steps=int(sys.argv[2]),
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    plugins=[AtomicCheckpointIO()],
    callbacks=[checkpoints],
)
trainer.fit(Ballast())
"""


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
        assert checkpoint["state_dict"]["ballast"].numel() == 8 * 1024 * 1024, path.name


@pytest.mark.slow
def test_sigkill_while_saving_never_leaves_a_broken_checkpoint(tmp_path):
    out = tmp_path / "checkpoints"
    out.mkdir()
    env = _writer_env(tmp_path)

    def check() -> None:
        _assert_all_load(out)
        assert (out / "last.ckpt").is_file()

    writer = ["-c", WRITER, str(out), "1000000"]
    killed_mid_write = kill_during_saves(
        writer, env, saved=lambda: _checkpoints(out), saving=lambda: _partly_written(out), check=check
    )
    assert killed_mid_write, "no kill landed during a write: the test did not test anything"

    # The next run deletes what the killed writes left behind.
    subprocess.run([sys.executable, "-c", WRITER, str(out), "2"], env=env, check=True, capture_output=True)
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
