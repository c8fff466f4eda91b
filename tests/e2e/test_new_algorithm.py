"""Adding an algorithm: a subclass defined right here, run through `lit_align fit` like any shipped module."""

import math

import pytest
import torch
import torch.nn.functional as F

from lit_align.cli import main
from lit_align.losses import preference_metrics
from lit_align.modules import DPOModule, PreferenceLogps
from lit_align.tensorboard import read_scalars

from ..conftest import ROOT


class LengthNormalisedDPO(DPOModule):
    """DPO on per-token average log-ratios, with a margin: a new algorithm in one overridden method."""

    def __init__(self, model_name_or_path: str, margin: float = 0.5, **kwargs) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.margin = margin

    def preference_loss(self, logps: PreferenceLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        avg = logps.averaged()
        chosen, rejected = avg.policy_chosen - avg.reference_chosen, avg.policy_rejected - avg.reference_rejected
        loss = -F.logsigmoid(self.beta * (chosen - rejected) - self.margin).mean()
        metrics = preference_metrics(self.beta * chosen, self.beta * rejected, avg.policy_chosen, avg.policy_rejected)
        return loss, {**metrics, "margin": torch.tensor(self.margin)}


@pytest.mark.slow
def test_subclass_defined_in_a_test_file_runs_through_fit(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    main(
        [
            "fit",
            "--config", "configs/quickstart/dpo.yaml",
            "--model.class_path", f"{__name__}.LengthNormalisedDPO",
            "--model.init_args.margin", "0.25",
            "--trainer.max_steps", "8",
            "--trainer.val_check_interval", "8",
            "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false",
            "--data.max_val_examples", "16",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )  # fmt: skip
    run = next(tmp_path.glob("quickstart-dpo/version_*"))
    scalars = read_scalars(run)
    # Policy == reference at step 0: loss = -logsigmoid(-margin) = log(1 + e^0.25).
    assert scalars["train/loss"][0][1] == pytest.approx(math.log(1 + math.exp(0.25)), abs=1e-5)
    assert scalars["train/margin"][0][1] == pytest.approx(0.25)
    assert "val/rewards/accuracies" in scalars and (run / "hf" / "adapter_model.safetensors").is_file()


def test_the_readme_example_dpop_by_hand():
    from examples.dpop import DPOPModule

    module = DPOPModule.__new__(DPOPModule)  # the loss needs only beta and lam
    module.beta, module.lam = 0.5, 2.0
    logps = PreferenceLogps(
        policy_chosen=torch.tensor([-3.0]),
        policy_rejected=torch.tensor([-5.0]),
        reference_chosen=torch.tensor([-2.0]),
        reference_rejected=torch.tensor([-2.0]),
        chosen_tokens=torch.tensor([4]),
        rejected_tokens=torch.tensor([4]),
    )
    loss, metrics = module.preference_loss(logps)
    # h = (-3 + 2) - (-5 + 2) = 2; penalty = max(0, -2 + 3) = 1; -logsigmoid(0.5 * (2 - 2 * 1)) = log 2
    assert loss.item() == pytest.approx(math.log(2))
    assert metrics["dpop/penalty"].item() == 1.0
