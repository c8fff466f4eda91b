"""AlignModelCheckpoint in a real Trainer loop: a one-weight module whose validation score is scripted to be best
at the first validation and worse after, so Lightning's own ModelCheckpoint would leave last.ckpt there."""

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from lit_align.callbacks.checkpoint import AlignModelCheckpoint

from ..e2e.test_resume import StopAtStep


class ScriptedScore(LightningModule):
    """Trains one weight with SGD; validation logs ``val/score`` from ``scores``, one per validation."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.scores = list(scores)

    def training_step(self, batch, batch_idx):
        loss = (self.weight * batch).sum()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/score", self.scores.pop(0))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(torch.ones(100, 1), batch_size=1)

    def val_dataloader(self):
        return DataLoader(torch.ones(1, 1), batch_size=1)


def _step_of(path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


class LastStepAtBatchStart(Callback):
    """The global step stored in last.ckpt when each training batch starts (None before it exists)."""

    def __init__(self, path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer, *args) -> None:
        self.seen.append(_step_of(self.path) if self.path.exists() else None)


def _fit(tmp_path, max_steps: int, scores: list[float], save_last=True) -> tuple[AlignModelCheckpoint, list]:
    checkpoint = AlignModelCheckpoint(
        dirpath=tmp_path, filename="step{step}", auto_insert_metric_name=False, monitor="val/score", mode="max",
        save_last=save_last,
    )  # fmt: skip
    recorder = LastStepAtBatchStart(tmp_path / "last.ckpt")
    trainer = Trainer(
        max_steps=max_steps,
        val_check_interval=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, checkpoint],
        default_root_dir=tmp_path,
    )
    trainer.fit(ScriptedScore(scores))
    return checkpoint, recorder.seen


def test_last_checkpoint_is_rewritten_at_every_validation_even_without_improvement(tmp_path):
    # Validations at steps 2, 4, 6 score 1.0, 0.5, 0.2: only step 2 is a top-1 checkpoint.
    checkpoint, seen = _fit(tmp_path, max_steps=6, scores=[1.0, 0.5, 0.2])
    assert seen == [None, None, 2, 2, 4, 4]  # Lightning's own: [None, None, 2, 2, 2, 2]
    assert _step_of(tmp_path / "last.ckpt") == 6
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt", "step2.ckpt"]
    assert checkpoint.best_model_path == str(tmp_path / "step2.ckpt")


def test_a_run_ending_between_validations_leaves_its_final_state_in_last(tmp_path):
    _fit(tmp_path, max_steps=5, scores=[1.0, 0.5])
    assert _step_of(tmp_path / "last.ckpt") == 5
    assert _step_of(tmp_path / "step2.ckpt") == 2


@pytest.mark.parametrize("improving", [False, True])
def test_save_last_link_never_points_at_an_older_state(tmp_path, improving):
    scores = [0.1, 0.5, 0.9] if improving else [1.0, 0.5, 0.2]
    _, seen = _fit(tmp_path, max_steps=6, scores=scores, save_last="link")
    assert seen == [None, None, 2, 2, 4, 4]
    last = tmp_path / "last.ckpt"
    assert _step_of(last) == 6
    # With a new best at the last validation, last.ckpt is Lightning's link to it; without, a file of its own.
    assert last.is_symlink() == improving


class StepsLogged(Logger):
    """Records the step of every ``train/loss`` it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    name, version = "steps", 0

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "train/loss" in metrics:
            self.steps.append(step)


def test_a_run_resumed_from_the_validation_run_at_a_stop_logs_at_the_right_steps(tmp_path):
    """Stopping at step 7 makes Lightning validate there (validations are scheduled every 5), and the checkpoint
    written then resumed with every logged step one early: 6, 7, 8 instead of 7, 8, 9."""

    def fit(max_steps: int, callbacks: list, ckpt_path=None) -> list[int]:
        logger = StepsLogged()
        checkpoint = AlignModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", save_last=True)
        trainer = Trainer(
            max_steps=max_steps,
            val_check_interval=5,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            logger=logger,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[*callbacks, checkpoint],
        )
        trainer.fit(ScriptedScore([1.0, 0.5, 0.2]), ckpt_path=ckpt_path)
        return logger.steps

    assert fit(10, [StopAtStep(7)]) == list(range(7))
    assert _step_of(tmp_path / "last.ckpt") == 7
    assert fit(10, [], ckpt_path=tmp_path / "last.ckpt") == [7, 8, 9]
