"""Exact resume: 10 steps in one go equal 5 steps, a stop, and 5 more from the checkpoint; last.ckpt is the final
state, and a run resumed from its own folder continues there."""

import warnings

import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

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


def _checkpoint_step(path) -> int:
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


@pytest.mark.slow
def test_last_ckpt_is_the_final_state_and_a_resumed_run_continues_in_its_folder(tmp_path, monkeypatch):
    """The quickstart monitors val/rewards/accuracies. Lightning's ModelCheckpoint then left last.ckpt at the last
    improvement (here the validation at step 5), and a resume opened a new version folder with two false warnings.
    A constant learning rate, so that 7 steps then 3 more follow the same schedule as 10 in one go."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    constant = ["--model.init_args.lr_schedule.kind=constant", "--model.init_args.lr_schedule.warmup_ratio=0"]
    experiment = tmp_path / "run" / "quickstart-dpo"
    # Validation at step 5; the run ends at max_steps 7, between two validations.
    first = _fit(tmp_path / "run", "--trainer.max_steps=7", *constant)
    assert first.name == "version_0" and _checkpoint_step(first / "checkpoints" / "last.ckpt") == 7
    assert (experiment / "latest").resolve() == first.resolve()
    # last.ckpt holds the weights of the hf/ export (the LoRA adapter; PEFT drops the adapter name in its keys).
    adapter = load_file(first / "hf" / "adapter_model.safetensors")
    state = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    assert len(state) == len(adapter) > 0
    for key, value in state.items():
        assert torch.equal(value, adapter[key.removeprefix("policy.").replace(".default", "")]), key

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path / "run", f"--ckpt_path={experiment / 'latest' / 'checkpoints' / 'last.ckpt'}", *constant)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "not resumable" in m or "dirpath has changed" in m], messages
    # One run folder, its last.ckpt at the final step (validated at 10), one curve per metric.
    assert sorted(p.name for p in experiment.iterdir()) == ["latest", "version_0"]
    assert _checkpoint_step(first / "checkpoints" / "last.ckpt") == 10
    resumed = read_scalars(first)["train/loss"]
    assert [step for step, _ in resumed] == list(range(10))

    # Resuming from the end-of-training checkpoint (step 7) is exact: the same losses as 10 steps in one go.
    full = read_scalars(_fit(tmp_path / "full", *constant))["train/loss"]
    assert max(abs(a - b) for (_, a), (_, b) in zip(full, resumed, strict=True)) <= 1e-6
