"""BetaDPOModule on the tiny model: DPO with a fixed β, rule state in checkpoints, a learnable β reaching the
optimizer, and a researcher's own rule.

Most tests use ``reference: none``: with a reference the margins are all 0 until the policy moves, and
every β gives log 2.
"""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from torch.testing import assert_close

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.losses.beta_rules import BatchAdaptiveBeta, BetaDecision, BetaRule, FixedBeta, LearnableBeta
from lit_align.losses.dpo import dpo_loss
from lit_align.models import LoraSettings
from lit_align.modules import DPOModule
from lit_align.modules.beta_dpo import BetaDPOModule

from ..conftest import DEMO_DATA, TINY_MODEL


class FirstHalfDoubleBeta(BetaRule):
    """A researcher's rule: train on the first half of the batch with twice β0."""

    def forward(self, margins, gather=None):
        keep = torch.zeros_like(margins, dtype=torch.bool)
        keep[: len(margins) // 2] = True
        return BetaDecision(torch.tensor(2 * self.beta), keep)

    def metrics(self):
        return {"custom/half": torch.tensor(0.5)}


def _data(batch_size: int = 4) -> AlignDataModule:
    sources = [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))]
    return AlignDataModule(sources, sources, tokenizer=str(TINY_MODEL), task="preference", batch_size=batch_size)


@pytest.fixture(scope="module")
def batch():
    data = _data()
    data.setup()
    return next(iter(data.val_dataloader()))


def _module(cls=BetaDPOModule, **kwargs):
    module = cls(str(TINY_MODEL), **kwargs)
    module.configure_model()
    return module


def test_fixed_beta_is_dpo(batch):
    dpo = _module(DPOModule, reference="none", beta=0.3)
    beta_dpo = _module(reference="none", beta=0.3, beta_rule=FixedBeta(beta=0.3))
    loss, metrics = dpo.preference_loss(dpo.compute_logps(batch))
    beta_loss, beta_metrics = beta_dpo.preference_loss(beta_dpo.compute_logps(batch))
    assert_close(beta_loss, loss)
    assert abs(loss.item() - 0.6931) > 1e-3  # the margins are not 0, so beta matters
    for name, value in metrics.items():
        assert_close(beta_metrics[name], value)
    assert_close(beta_metrics["beta/used"], torch.tensor(0.3))


def test_default_rule_updates_its_buffers_in_training_only(batch):
    module = _module(reference="none", beta=0.2)
    rule = module.beta_rule
    assert isinstance(rule, BatchAdaptiveBeta) and rule.beta == 0.2
    assert module.hparams["beta_rule"] is None  # reloading builds the same default
    assert {"beta_rule.margin_mean", "beta_rule.margin_std"} <= set(module.state_dict())
    logps = module.compute_logps(batch)

    module.eval()
    _, metrics = module.preference_loss(logps)
    assert rule.margin_mean == 0 and rule.margin_std == 0
    assert metrics["beta/used"].item() == pytest.approx(0.2) and metrics["filter/kept_fraction"] == 1

    module.train()
    loss, metrics = module.preference_loss(logps)
    margins = (logps.policy_chosen - logps.policy_rejected).detach()
    assert_close(rule.margin_mean, 0.1 * margins.mean())  # first update from zero
    assert_close(rule.margin_std, 0.1 * margins.std())
    assert_close(module.state_dict()["beta_rule.margin_mean"], rule.margin_mean)
    assert metrics["filter/kept_fraction"] == 0.75  # floor(4 * 0.8) = 3 of 4 pairs
    assert {"beta/used", "margin/ema_mean", "margin/ema_std", "rewards/accuracies"} <= set(metrics)
    # the loss averages the kept pairs at the batch beta; the rewards use beta0 for every pair
    out = dpo_loss(logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected)
    assert_close(metrics["rewards/chosen"], (0.2 * logps.policy_chosen).mean())
    assert loss.item() != pytest.approx(out.losses.mean().item())


def test_state_dict_round_trip_continues_the_statistics(batch):
    module = _module(reference="none")
    logps = module.compute_logps(batch)
    module.train()
    module.preference_loss(logps)
    resumed = _module(reference="none")
    resumed.load_state_dict(module.state_dict())
    assert torch.equal(resumed.beta_rule.margin_mean, module.beta_rule.margin_mean)
    assert torch.equal(resumed.beta_rule.margin_std, module.beta_rule.margin_std)
    resumed.train()
    module.preference_loss(logps)
    resumed.preference_loss(logps)
    assert torch.equal(resumed.beta_rule.margin_mean, module.beta_rule.margin_mean)
    assert torch.equal(resumed.beta_rule.margin_std, module.beta_rule.margin_std)


def test_learnable_beta_gets_a_gradient_and_reaches_the_optimizer(batch):
    module = _module(reference="none", beta_rule=LearnableBeta(beta=0.1))
    loss, metrics = module.preference_loss(module.compute_logps(batch))
    loss.backward()
    log_beta = module.beta_rule.log_beta
    assert log_beta.grad is not None and log_beta.grad != 0
    assert_close(metrics["beta/used"], torch.tensor(0.1))

    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    module._trainer = None
    groups = [g for g in optimizer.param_groups if any(p is log_beta for p in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def test_a_custom_rule_plugs_in(batch):
    module = _module(reference="none", beta_rule=FirstHalfDoubleBeta(beta=0.1))
    logps = module.compute_logps(batch)
    loss, metrics = module.preference_loss(logps)
    out = dpo_loss(
        logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected, beta=0.2
    )
    assert_close(loss, out.losses[:2].mean())
    assert metrics["custom/half"] == 0.5
    assert module.hparams["beta_rule"] == {
        "class_path": f"{__name__}.FirstHalfDoubleBeta",
        "init_args": {"beta": 0.1},
    }


def test_checkpoint_loads_with_weights_only_and_carries_the_rule(tmp_path):
    module = BetaDPOModule(str(TINY_MODEL), lora=LoraSettings(r=4, dropout=0.0), beta_rule=BatchAdaptiveBeta(alpha=0.5))
    trainer = Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=_data())
    path = tmp_path / "beta_dpo.ckpt"
    trainer.save_checkpoint(path)

    checkpoint = torch.load(path, weights_only=True)
    rule_config = checkpoint["hyper_parameters"]["beta_rule"]
    assert rule_config == {
        "class_path": "lit_align.losses.beta_rules.BatchAdaptiveBeta",
        "init_args": {"beta": 0.1, "alpha": 0.5, "keep_fraction": 0.8, "momentum": 0.9},
    }
    state = checkpoint["state_dict"]
    # step 1 has zero margins (LoRA starts as the identity), step 2 does not
    assert state["beta_rule.margin_mean"] != 0 and state["beta_rule.margin_std"] > 0

    resumed = _module(lora=LoraSettings(r=4, dropout=0.0), beta_rule=rule_config)
    assert isinstance(resumed.beta_rule, BatchAdaptiveBeta) and resumed.beta_rule.alpha == 0.5
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"], strict=True)
    assert torch.equal(resumed.beta_rule.margin_mean, state["beta_rule.margin_mean"])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="same value"):
        BetaDPOModule(str(TINY_MODEL), beta=0.2, beta_rule=BatchAdaptiveBeta(beta=0.1))
    with pytest.raises(ValueError, match="sigmoid"):
        BetaDPOModule(str(TINY_MODEL), loss_type="ipo")
