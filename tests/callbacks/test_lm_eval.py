"""LMEval on a short DPO run of the tiny chat model: scores logged and written at the right steps, training
unchanged; and its schedule, on a fake trainer."""

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning import seed_everything
from lightning.pytorch import Callback

from lit_align.callbacks import LMEval
from lit_align.data import AlignDataModule, DataSource
from lit_align.losses import DPOLoss
from lit_align.models import LoraSettings
from lit_align.modules import PreferenceModule
from lit_align.tensorboard import read_scalars

from ..conftest import DEMO_DATA, TINY_MODEL
from .short_fit import fit_four_steps

# Absolute, so the test does not depend on the working directory the task YAML's relative path starts from.
DEMO_CHOICE = {"demo_choice": str(DEMO_DATA / "dpo_val.jsonl")}


class Probe(Callback):
    """After every optimizer step (and after LMEval, which comes earlier in the list): each module's training
    flag; at the end of training: every generator's state."""

    def __init__(self):
        self.modes = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.modes.append([m.training for m in pl_module.policy.modules()])

    def on_train_end(self, trainer, pl_module):
        self.states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())


def _fit(save_dir, callbacks):
    seed_everything(7)
    module = PreferenceModule(
        str(TINY_MODEL),
        loss=DPOLoss(beta=0.1),
        lora=LoraSettings(r=16, alpha=32, dropout=0.0, target_modules="all-linear"),
    )
    data = AlignDataModule(
        train=[DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],  # 200 pairs: tokenising the 2,000 of train takes 3 s
        val=[DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="preference",
        max_length=64,
        batch_size=2,
        max_val_examples=4,
        max_truncated_fraction=1.0,
    )
    return fit_four_steps(module, data, save_dir, callbacks, limit_val_batches=1)


def test_scores_are_logged_and_written_and_training_is_unchanged(tmp_path):
    evaluator = LMEval(tasks=["demo_choice"], every_n_steps=3, limit=10, batch_size=10, data_files=DEMO_CHOICE)
    with_probe, without_probe = Probe(), Probe()
    observed = _fit(tmp_path / "with", [evaluator, with_probe])
    plain = _fit(tmp_path / "without", [without_probe])

    # Validation ends at steps 2 and 4, step 3 is a multiple of every_n_steps; the sanity check scores nothing.
    scalars = read_scalars(observed.log_dir)
    for metric in ("eval/demo_choice/acc", "eval/demo_choice/acc_norm"):
        steps = [step for step, _ in scalars[metric]]
        assert steps == [2, 3, 4]
        assert all(0.0 <= value <= 1.0 for _, value in scalars[metric])
    run = tmp_path / "with" / "lightning_logs" / "version_0"
    assert sorted(p.name for p in (run / "lm_eval").iterdir()) == ["step_2", "step_3", "step_4"]
    written = json.loads((run / "lm_eval" / "step_4" / "results.json").read_text(encoding="utf-8"))
    assert written["lit_align"]["global_step"] == 4 and written["lit_align"]["tasks"] == ["demo_choice"]
    assert written["n-samples"]["demo_choice"]["effective"] == 10  # the limit
    logged = dict(scalars["eval/demo_choice/acc"])[4]
    assert logged == pytest.approx(written["results"]["demo_choice"]["acc,none"])
    assert (run / "lm_eval" / "step_2" / "results.csv").is_file()

    # Same losses, same modes after every step, same random state: evaluating changed nothing training could see.
    assert read_scalars(observed.log_dir)["train/loss"] == read_scalars(plain.log_dir)["train/loss"]
    assert len(scalars["train/loss"]) == 4
    assert with_probe.modes == without_probe.modes and all(all(modes) for modes in with_probe.modes)
    for a, b in zip(with_probe.states, without_probe.states, strict=True):
        assert (a == b).all() if isinstance(a, torch.Tensor | np.ndarray) else a == b


def test_evaluate_restores_every_modules_mode():
    module = PreferenceModule(str(TINY_MODEL), lora=LoraSettings(dropout=0.0))
    module.configure_model()
    module.policy.train()
    layers = module.policy.get_base_model().model.layers
    layers[0].eval()  # a submodule kept in eval mode stays so
    before = [m.training for m in module.policy.modules()]
    results = LMEval(tasks=["demo_choice"], limit=4, data_files=DEMO_CHOICE).evaluate(module)
    assert [m.training for m in module.policy.modules()] == before
    assert results["n-samples"]["demo_choice"]["effective"] == 4
    assert not layers[0].training and layers[1].training


class _Recorder(LMEval):
    """LMEval whose evaluation only records the step it was asked at."""

    def __init__(self, **kwargs):
        super().__init__(tasks=["demo_choice"], **kwargs)
        self._active = True
        self.steps = []

    def evaluate(self, pl_module, trainer=None):
        self.steps.append(trainer.global_step)
        return {}


def _drive(evaluator, tmp_path, schedule):
    """Feed ``schedule`` (``("batch", global_step)`` or ``("val", global_step)``) through the hooks."""
    trainer = SimpleNamespace(global_step=0, sanity_checking=True, is_global_zero=True, loggers=[])
    evaluator._log_dir = tmp_path
    evaluator.on_train_start(trainer, None)
    evaluator.on_validation_end(trainer, None)  # the sanity check
    trainer.sanity_checking = False
    for hook, step in schedule:
        trainer.global_step = step
        if hook == "batch":
            evaluator.on_train_batch_end(trainer, None, None, None, 0)
        else:
            evaluator.on_validation_end(trainer, None)
    return evaluator.steps


def test_schedule_counts_optimizer_steps_and_never_repeats_a_step(tmp_path):
    # Two micro-batches per optimizer step: the global step repeats while gradients accumulate.
    batches = [("batch", step) for step in (0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5)]
    schedule = batches[:5] + [("val", 2)] + batches[5:] + [("val", 5), ("batch", 6)]
    assert _drive(_Recorder(every_n_steps=2), tmp_path, schedule) == [2, 4, 5, 6]
    assert _drive(_Recorder(every_n_steps=2, after_validation=False), tmp_path, schedule) == [2, 4, 6]
    assert _drive(_Recorder(), tmp_path, schedule) == [2, 5]


def test_invalid_settings_fail_at_construction():
    with pytest.raises(ValueError, match="never run"):
        LMEval(tasks=["demo_choice"], after_validation=False)
    with pytest.raises(ValueError, match="every_n_steps"):
        LMEval(tasks=["demo_choice"], every_n_steps=-1)
    with pytest.raises(ValueError, match="batch_size"):
        LMEval(tasks=["demo_choice"], batch_size=0)
    with pytest.raises(ValueError, match="limit"):
        LMEval(tasks=["demo_choice"], limit=0)
    with pytest.raises(ValueError, match="tasks"):
        LMEval(tasks=[])


def test_off_where_it_cannot_evaluate_and_checks_tasks_before_training(tmp_path):
    from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

    module = SimpleNamespace(policy=object(), tokenizer=object())
    evaluator = LMEval(tasks=["demo_choice"], data_files=DEMO_CHOICE)
    trainer = SimpleNamespace(log_dir=str(tmp_path), default_root_dir=".", callbacks=[evaluator])

    trainer.strategy = FSDPStrategy()
    with pytest.warns(UserWarning, match="LMEval is off"):
        evaluator.setup(trainer, module, "fit")
    assert not evaluator._active

    trainer.strategy = SingleDeviceStrategy("cpu")
    with pytest.warns(UserWarning, match="no `tokenizer` and `policy`"):
        evaluator.setup(trainer, SimpleNamespace(tokenizer=None), "fit")
    assert not evaluator._active

    evaluator.setup(trainer, module, "fit")
    assert evaluator._active

    recipes_own = LMEval(tasks=["demo_choice"], data_files=DEMO_CHOICE)  # a fragment's, later in the list, wins
    trainer.callbacks = [recipes_own, evaluator]
    with pytest.warns(UserWarning, match="only the last"):
        recipes_own.setup(trainer, module, "fit")
    assert not recipes_own._active

    # A missing data file stops the run in setup, not at the first validation. (A misspelt task name too, but
    # finding that out indexes lm-eval's 15,000 task files: 10 s.)
    missing = LMEval(tasks=["demo_choice"], data_files={"demo_choice": str(tmp_path / "missing.jsonl")})
    trainer.callbacks = [missing]
    with pytest.raises(FileNotFoundError, match="data_files.demo_choice"):
        missing.setup(trainer, module, "fit")
