"""Exact resume: 10 steps in one go equal 5 steps, a stop, and 5 more from the checkpoint."""

import pytest
from lightning.pytorch import Callback

from lit_align.cli import main
from lit_align.tensorboard import read_scalars

from ..conftest import ROOT


class StopAtStep(Callback):
    """Stop a run as a killed job would have, after `step` optimizer steps (the checkpoint at `step` exists)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(save_dir, *extra):
    main(
        [
            "fit", "--config", "configs/quickstart/dpo.yaml",
            "--trainer.max_steps=10", "--trainer.val_check_interval=5", "--data.max_val_examples=16",
            "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={save_dir}", *extra,
        ]
    )  # fmt: skip
    return next(save_dir.glob("quickstart-dpo/version_*"))


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    full = read_scalars(_fit(tmp_path / "full"))["train/loss"]
    stop = f'--trainer.callbacks+={{"class_path": "{__name__}.StopAtStep", "init_args": {{"step": 5}}}}'
    first = _fit(tmp_path / "first", stop)
    second = _fit(tmp_path / "second", f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    resumed = read_scalars(first)["train/loss"] + read_scalars(second)["train/loss"]
    assert [step for step, _ in resumed] == list(range(10)) == [step for step, _ in full]
    assert max(abs(a - b) for (_, a), (_, b) in zip(full, resumed, strict=True)) <= 1e-6
