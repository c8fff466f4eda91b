"""Adding an algorithm: a loss class (the README's DPO-Positive, and one defined right here), checked by hand and
run through `lit_align fit` like any shipped loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from examples.dpop import DPOPLoss
from lit_align.cli import main
from lit_align.losses import LossOutput, PreferenceLogps, PreferenceLoss, preference_metrics
from lit_align.tensorboard import read_scalars

from ..conftest import ROOT


class LengthNormalisedDPOLoss(PreferenceLoss):
    """DPO on per-token average log-ratios, with a margin: a new loss in a dozen lines."""

    averaged_logps = True

    def __init__(self, beta: float = 0.1, margin: float = 0.5) -> None:
        super().__init__()
        self.beta, self.margin = beta, margin

    def forward(self, logps: PreferenceLogps) -> LossOutput:
        avg = logps.averaged()
        chosen, rejected = avg.policy_chosen - avg.reference_chosen, avg.policy_rejected - avg.reference_rejected
        loss = -F.logsigmoid(self.beta * (chosen - rejected) - self.margin).mean()
        metrics = preference_metrics(self.beta * chosen, self.beta * rejected, avg.policy_chosen, avg.policy_rejected)
        return LossOutput(loss, {**metrics, "margin": torch.tensor(self.margin)})


def _logps(policy_chosen: float, policy_rejected: float, reference_chosen: float, reference_rejected: float):
    return PreferenceLogps(
        policy_chosen=torch.tensor([policy_chosen]),
        policy_rejected=torch.tensor([policy_rejected]),
        reference_chosen=torch.tensor([reference_chosen]),
        reference_rejected=torch.tensor([reference_rejected]),
        chosen_tokens=torch.tensor([4]),
        rejected_tokens=torch.tensor([4]),
    )


def test_the_readme_example_dpop_by_hand():
    logps = PreferenceLogps(
        policy_chosen=torch.tensor([-3.0]), policy_rejected=torch.tensor([-5.0]),
        reference_chosen=torch.tensor([-2.0]), reference_rejected=torch.tensor([-2.0]),
        chosen_tokens=torch.tensor([4]), rejected_tokens=torch.tensor([4]),
    )  # fmt: skip
    loss, metrics = DPOPLoss(beta=0.5, lam=2.0)(logps)
    # h = (-3 + 2) - (-5 + 2) = 2; penalty = max(0, -2 + 3) = 1; -logsigmoid(0.5 * (2 - 2 * 1)) = log 2
    assert loss.item() == pytest.approx(math.log(2))
    assert metrics["dpop/penalty"].item() == 1.0
    # Chosen above the reference: no penalty, plain DPO: -logsigmoid(0.5 * ((-1 + 2) - (-5 + 2))) = log(1 + e^-2)
    loss, metrics = DPOPLoss(beta=0.5, lam=2.0)(_logps(-1.0, -5.0, -2.0, -2.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2))) and metrics["dpop/penalty"].item() == 0.0
    assert metrics["rewards/chosen"].item() == 0.5 and metrics["rewards/rejected"].item() == -1.5


def _fit(tmp_path, loss_class: str, argument: str, value: str):
    """`lit_align fit` on the DPO quickstart with ``loss_class`` and one of its arguments, from the repository root."""
    main(
        [
            "fit",
            "--config", "configs/quickstart/dpo.yaml",
            "--model.init_args.loss.class_path", loss_class,
            f"--model.init_args.loss.init_args.{argument}", value,
            "--trainer.max_steps", "8",
            "--trainer.val_check_interval", "8",
            "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false",
            "--data.max_val_examples", "16",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )  # fmt: skip
    run = next(tmp_path.glob("quickstart-dpo/version_*"))
    return run, read_scalars(run)


@pytest.fixture
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe's relative paths, and `examples.dpop` importable
    monkeypatch.setattr("sys.argv", ["lit_align"])


@pytest.mark.slow
def test_dpop_runs_through_fit_by_naming_its_class(tmp_path, _at_root):
    run, scalars = _fit(tmp_path, "examples.dpop.DPOPLoss", "lam", "50")
    # Policy == reference at step 0: h = 0 and no penalty, so the loss is log 2.
    assert scalars["train/loss"][0] == (0, pytest.approx(math.log(2), abs=1e-5))
    assert scalars["train/dpop/penalty"][0] == (0, 0.0) and "val/dpop/penalty" in scalars
    assert "lam: 50.0" in (run / "config.yaml").read_text()


@pytest.mark.slow
def test_a_loss_defined_in_a_test_file_runs_through_fit(tmp_path, _at_root):
    run, scalars = _fit(tmp_path, f"{__name__}.LengthNormalisedDPOLoss", "margin", "0.25")
    # Policy == reference at step 0: loss = -logsigmoid(-margin) = log(1 + e^0.25).
    assert scalars["train/loss"][0][1] == pytest.approx(math.log(1 + math.exp(0.25)), abs=1e-5)
    assert scalars["train/margin"][0][1] == pytest.approx(0.25)
    assert "val/rewards/accuracies" in scalars and (run / "hf" / "adapter_model.safetensors").is_file()
