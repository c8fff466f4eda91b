"""Sharded (directory) checkpoints under SIGKILL: lit_align's ModelParallelStrategy and DeepSpeedStrategy write a
checkpoint directory beside the target and move it into place, so a job killed while saving leaves every
checkpoint loadable, and loadable as one step: the ballast saved with it holds that step's number in every
element.

The writer is a real ``Trainer`` with FSDP2 (one CPU process, gloo) saving a 32 MB distributed checkpoint every
step, killed at a random moment while a save is under way. Lightning's own ModelParallelStrategy, which rewrites
``last.ckpt`` in place, fails this test.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_align.strategies import move_into_place

from .conftest import ROOT
from .kill_during_save import kill_during_saves

WRITER = """
import sys
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lit_align.strategies import ModelParallelStrategy


class Ballast(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.register_buffer("ballast", torch.zeros(8 * 1024 * 1024))

    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        fully_shard(self.layer, mesh=self.device_mesh)

    def training_step(self, batch, batch_idx):
        self.ballast.fill_(self.global_step + 1)  # the step of the checkpoint saved after this batch
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
    accelerator="cpu",
    devices=1,
    strategy=ModelParallelStrategy(),
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    callbacks=[checkpoints],
)
trainer.fit(Ballast())
"""


def _checkpoints(directory: Path) -> dict[str, int]:
    return {d.name: (d / "meta.pt").stat().st_mtime_ns for d in directory.glob("*.ckpt") if (d / "meta.pt").exists()}


def _saving(directory: Path) -> bool:
    return any(directory.glob(".*.partial"))


def _assert_all_load_as_one_step(directory: Path, scratch: Path) -> None:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    for path in directory.glob("*.ckpt"):
        step = torch.load(path / "meta.pt", weights_only=True)["global_step"]
        dcp_to_torch_save(path, scratch / "flat.pt")  # raises on missing or truncated shards
        ballast = torch.load(scratch / "flat.pt", weights_only=True)["state_dict"]["ballast"]
        assert ballast.numel() == 8 * 1024 * 1024 and bool((ballast == step).all()), (path.name, step)


@pytest.mark.slow
def test_sigkill_while_saving_a_sharded_checkpoint_never_leaves_a_broken_one(tmp_path):
    out, scratch = tmp_path / "checkpoints", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def check() -> None:
        _assert_all_load_as_one_step(out, scratch)
        assert (out / "last.ckpt" / "meta.pt").is_file()

    writer = ["-c", WRITER, str(out), "1000000"]
    killed_mid_save = kill_during_saves(
        writer, env, saved=lambda: _checkpoints(out), saving=lambda: _saving(out), check=check, into_save=0.02
    )
    assert killed_mid_save, "no kill landed during a save: the test did not test anything"

    # The next run deletes what the killed saves left behind.
    subprocess.run([sys.executable, "-c", WRITER, str(out), "2"], env=env, check=True, capture_output=True)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    _assert_all_load_as_one_step(out, scratch)


def test_move_into_place_replaces_a_directory_a_file_or_nothing(tmp_path):
    for existing in ("directory", "file", None):
        target = tmp_path / f"{existing}.ckpt"
        if existing == "directory":
            target.mkdir()
            (target / "old_shard").write_text("old")
        elif existing == "file":
            target.write_text("old")
        finished = tmp_path / f".{target.name}.partial"
        finished.mkdir()
        (finished / "shard").write_text("new")
        move_into_place(finished, target)
        assert sorted(p.name for p in target.iterdir()) == ["shard"] and (target / "shard").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["None.ckpt", "directory.ckpt", "file.ckpt"]
