"""The ``latest`` link in an experiment's folder, and which folder a resumed run continues in."""

import os

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from lit_align.callbacks.run_folder import (
    LatestRunLink,
    continue_run_folder,
    point_latest_at,
    resumed_version,
    run_folders,
)


def test_latest_points_at_the_newest_run_with_a_relative_link(tmp_path):
    (tmp_path / "version_0").mkdir()
    assert point_latest_at(tmp_path, "version_0") is None
    assert os.readlink(tmp_path / "latest") == "version_0"
    (tmp_path / "version_1").mkdir()
    assert point_latest_at(tmp_path, "version_1") is None
    assert os.readlink(tmp_path / "latest") == "version_1"
    assert (tmp_path / "latest").resolve() == (tmp_path / "version_1").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "version_0", "version_1"]  # no leftovers


def test_a_latest_that_no_run_made_is_left_alone(tmp_path):
    directory, file, foreign = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    (directory / "latest").mkdir(parents=True)
    file.mkdir()
    (file / "latest").write_text("mine")
    foreign.mkdir()
    os.symlink(tmp_path / "a", foreign / "latest")

    assert point_latest_at(directory, "version_0") == f"{directory / 'latest'} is a directory that no run made"
    assert point_latest_at(file, "version_0") == f"{file / 'latest'} is a file that no run made"
    assert (
        point_latest_at(foreign, "version_0")
        == f"{foreign / 'latest'} is a link to {tmp_path / 'a'}, which no run made"
    )
    assert (directory / "latest").is_dir() and (file / "latest").read_text() == "mine"
    assert os.readlink(foreign / "latest") == str(tmp_path / "a")


def test_resumed_version_is_the_run_folder_of_a_checkpoint_in_the_experiment(tmp_path, monkeypatch):
    experiment = tmp_path / "logs" / "exp"
    (experiment / "version_3" / "checkpoints").mkdir(parents=True)
    os.symlink("version_3", experiment / "latest")
    assert resumed_version(experiment / "version_3" / "checkpoints" / "last.ckpt", experiment) == "version_3"
    assert resumed_version(experiment / "latest" / "checkpoints" / "last.ckpt", experiment) == "version_3"
    # Relative paths count from the working directory, as the CLI's do.
    monkeypatch.chdir(tmp_path)
    assert resumed_version("logs/exp/version_3/checkpoints/step000150.ckpt", "logs/exp") == "version_3"
    # Another experiment, a checkpoint outside a run's checkpoints/ folder, Lightning's "last": a new run folder.
    assert resumed_version(experiment / "version_3" / "checkpoints" / "last.ckpt", tmp_path / "logs" / "other") is None
    assert resumed_version(experiment / "version_3" / "last.ckpt", experiment) is None
    assert resumed_version("last", experiment) is None


class _OneWeight(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(torch.ones(4, 1), batch_size=1)


@pytest.mark.parametrize("logger_class", [TensorBoardLogger, CSVLogger])
def test_each_run_points_latest_at_its_own_folder(tmp_path, logger_class):
    for expected in ("version_0", "version_1"):
        trainer = Trainer(
            max_steps=1,
            logger=logger_class(tmp_path, name="exp"),
            callbacks=[LatestRunLink()],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(_OneWeight())
        assert os.readlink(tmp_path / "exp" / "latest") == expected
        assert (tmp_path / "exp" / "latest").resolve() == (tmp_path / "exp" / expected).resolve()


def test_no_link_for_a_run_folder_nested_below_its_version(tmp_path):
    assert run_folders(TensorBoardLogger(tmp_path, name="exp", sub_dir="extra")) is None
    assert run_folders(TensorBoardLogger(tmp_path, name="exp")) == (tmp_path / "exp", "version_0")


def _tensorboard_config(save_dir, **init_args):
    from jsonargparse import Namespace

    init = Namespace(save_dir=str(save_dir), name="exp", version=None, purge_step=None, **init_args)
    return Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger", init_args=init)


def test_a_resumed_run_continues_in_its_folder_and_hides_what_came_after_its_checkpoint(tmp_path):
    """A run killed at step 8 with last.ckpt at step 5: the resumed run logs 5..9 into version_2 again, and
    TensorBoard shows its values from step 5 on instead of both runs' (purge_step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "exp" / "version_2"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 5}, run / "checkpoints" / "last.ckpt")
    killed = TensorBoardLogger(tmp_path, name="exp", version="version_2")
    for step in range(8):
        killed.log_metrics({"train/loss": 1.0}, step=step)
    killed.log_metrics({"val/loss": 3.0}, step=4)  # the validation that the checkpoint at step 5 followed
    killed.finalize("killed")

    config = _tensorboard_config(tmp_path)
    assert continue_run_folder(config, run / "checkpoints" / "last.ckpt") == "version_2"
    assert (config.init_args.version, config.init_args.purge_step) == ("version_2", 5)
    resumed = TensorBoardLogger(**vars(config.init_args))
    for step in range(5, 10):
        resumed.log_metrics({"train/loss": 2.0}, step=step)
    resumed.finalize("success")

    assert resumed.log_dir == str(run)
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(s, 1.0) for s in range(5)] + [
        (s, 2.0) for s in range(5, 10)
    ]
    assert [(e.step, e.value) for e in events.Scalars("val/loss")] == [(4, 3.0)]


def test_other_checkpoints_and_loggers_get_a_new_folder(tmp_path):
    from jsonargparse import Namespace

    (tmp_path / "exp" / "version_0" / "checkpoints").mkdir(parents=True)
    inside = tmp_path / "exp" / "version_0" / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 3}, inside)
    elsewhere = tmp_path / "last.ckpt"
    torch.save({"global_step": 3}, elsewhere)

    config = _tensorboard_config(tmp_path)
    assert continue_run_folder(config, elsewhere) is None and config.init_args.version is None
    pinned = _tensorboard_config(tmp_path)
    pinned.init_args.version = "mine"
    assert continue_run_folder(pinned, inside) is None and pinned.init_args.version == "mine"
    # Lightning's CSVLogger deletes the metrics.csv it finds in an existing folder: never continue it.
    csv = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(save_dir=str(tmp_path)))
    csv.init_args.name, csv.init_args.version = "exp", None
    assert continue_run_folder(csv, inside) is None and csv.init_args.version is None
    assert continue_run_folder(False, inside) is None
