"""PreferenceModule with BetaDPOLoss on the tiny model: DPO with a fixed β, rule state in checkpoints (and in
checkpoints written before losses were objects), a learnable β reaching the optimizer, and a researcher's own rule.

Most tests use ``reference: none``: with a reference the margins are all 0 until the policy moves, and
every β gives log 2.
"""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from torch.testing import assert_close

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.losses import BetaDPOLoss, DPOLoss
from lit_align.losses.beta_rules import BatchAdaptiveBeta, BetaDecision, BetaRule, FixedBeta, LearnableBeta
from lit_align.losses.dpo import dpo_loss
from lit_align.models import LoraSettings
from lit_align.modules import PreferenceModule

from ..conftest import DEMO_DATA, TINY_MODEL

LORA = LoraSettings(r=4, dropout=0.0)


class FirstHalfDoubleBeta(BetaRule):
    """A researcher's rule: train on the first half of the batch with twice β0."""

    def forward(self, margins, beta, gather=None):
        keep = torch.zeros_like(margins, dtype=torch.bool)
        keep[: len(margins) // 2] = True
        return BetaDecision(torch.tensor(2 * beta), keep)

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


def _module(loss=None, **kwargs) -> PreferenceModule:
    module = PreferenceModule(str(TINY_MODEL), loss=loss if loss is not None else BetaDPOLoss(), **kwargs)
    module.configure_model()
    return module


def _slim_checkpoint(module: PreferenceModule) -> dict:
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def test_fixed_beta_is_dpo(batch):
    dpo = _module(DPOLoss(beta=0.3), reference="none")
    beta_dpo = _module(BetaDPOLoss(beta=0.3, rule=FixedBeta()), reference="none")
    loss, metrics = dpo.loss(dpo.compute_logps(batch))
    beta_loss, beta_metrics = beta_dpo.loss(beta_dpo.compute_logps(batch))
    assert_close(beta_loss, loss)
    assert abs(loss.item() - 0.6931) > 1e-3  # the margins are not 0, so beta matters
    for name, value in metrics.items():
        assert_close(beta_metrics[name], value)
    assert_close(beta_metrics["beta/used"], torch.tensor(0.3))


def test_default_rule_updates_its_buffers_in_training_only(batch):
    module = _module(BetaDPOLoss(beta=0.2), reference="none")
    rule = module.loss.rule
    assert isinstance(rule, BatchAdaptiveBeta) and module.loss.beta == 0.2
    assert "loss" not in module.hparams  # the run's config.yaml rebuilds the loss and its rule
    assert {"loss.rule.margin_mean", "loss.rule.margin_std"} <= set(module.state_dict())
    logps = module.compute_logps(batch)

    module.eval()
    _, metrics = module.loss(logps)
    assert rule.margin_mean == 0 and rule.margin_std == 0
    assert metrics["beta/used"].item() == pytest.approx(0.2) and metrics["filter/kept_fraction"] == 1

    module.train()
    loss, metrics = module.loss(logps)
    margins = (logps.policy_chosen - logps.policy_rejected).detach()
    assert_close(rule.margin_mean, 0.1 * margins.mean())  # first update from zero
    assert_close(rule.margin_std, 0.1 * margins.std())
    assert_close(module.state_dict()["loss.rule.margin_mean"], rule.margin_mean)
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
    module.loss(logps)
    resumed = _module(reference="none")
    resumed.load_state_dict(module.state_dict())
    assert torch.equal(resumed.loss.rule.margin_mean, module.loss.rule.margin_mean)
    assert torch.equal(resumed.loss.rule.margin_std, module.loss.rule.margin_std)
    resumed.train()
    module.loss(logps)
    resumed.loss(logps)
    assert torch.equal(resumed.loss.rule.margin_mean, module.loss.rule.margin_mean)
    assert torch.equal(resumed.loss.rule.margin_std, module.loss.rule.margin_std)


def test_learnable_beta_gets_a_gradient_and_reaches_the_optimizer(batch):
    module = _module(BetaDPOLoss(beta=0.1, rule=LearnableBeta()), reference="none")
    logps = module.compute_logps(batch)
    loss, metrics = module.loss(logps)
    loss.backward()
    log_scale = module.loss.rule.log_scale
    assert_close(metrics["beta/used"], torch.tensor(0.1))
    # d/ds mean(-logsigmoid(0.1 * e^s * h)) at s = 0 is mean(-0.1 * h * sigmoid(-0.1 * h)), h the margins
    h = (logps.policy_chosen - logps.policy_rejected).detach()
    assert log_scale.grad is not None and log_scale.grad != 0
    assert_close(log_scale.grad, (-0.1 * h * torch.sigmoid(-0.1 * h)).mean())

    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    module._trainer = None
    groups = [g for g in optimizer.param_groups if any(p is log_scale for p in g["params"])]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def test_a_custom_rule_plugs_in(batch):
    module = _module(BetaDPOLoss(beta=0.1, rule=FirstHalfDoubleBeta()), reference="none")
    logps = module.compute_logps(batch)
    loss, metrics = module.loss(logps)
    out = dpo_loss(
        logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected, beta=0.2
    )
    assert_close(loss, out.losses[:2].mean())
    assert metrics["custom/half"] == 0.5
    assert_close(metrics["rewards/chosen"], (0.1 * logps.policy_chosen).mean())  # rewards keep beta0


def test_checkpoint_loads_with_weights_only_and_carries_the_rule(tmp_path):
    module = PreferenceModule(str(TINY_MODEL), lora=LORA, loss=BetaDPOLoss(rule=BatchAdaptiveBeta(alpha=0.5)))
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
    assert "loss" not in checkpoint["hyper_parameters"]  # the run's config.yaml rebuilds the loss
    state = checkpoint["state_dict"]
    # step 1 has zero margins (LoRA starts as the identity), step 2 does not
    assert state["loss.rule.margin_mean"] != 0 and state["loss.rule.margin_std"] > 0

    resumed = _module(BetaDPOLoss(rule=BatchAdaptiveBeta(alpha=0.5)), lora=LORA)
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"], strict=True)
    assert torch.equal(resumed.loss.rule.margin_mean, state["loss.rule.margin_mean"])
    assert torch.equal(resumed.loss.rule.margin_std, state["loss.rule.margin_std"])


def test_a_checkpoint_from_before_losses_were_objects_loads_the_rule_state(batch):
    # BetaDPOModule kept its rule at `beta_rule`: the same buffers, under another prefix.
    module = _module(lora=LORA, reference="none")
    module.train()
    module.loss(module.compute_logps(batch))
    checkpoint = _slim_checkpoint(module)
    state = checkpoint["state_dict"]
    for name in ("margin_mean", "margin_std"):
        state[f"beta_rule.{name}"] = state.pop(f"loss.rule.{name}")
    assert module.loss.rule.margin_mean != 0 and module.loss.rule.margin_std > 0

    resumed = _module(lora=LORA, reference="none")
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"], strict=True)
    assert not any(key.startswith("beta_rule.") for key in checkpoint["state_dict"])
    assert torch.equal(resumed.loss.rule.margin_mean, module.loss.rule.margin_mean)
    assert torch.equal(resumed.loss.rule.margin_std, module.loss.rule.margin_std)


def test_an_old_learnable_log_beta_becomes_the_log_scale_of_beta0(batch):
    # LearnableBeta(beta=0.1) learned log β itself; LearnableBeta() learns log(β / β0), β0 being the loss's beta.
    module = _module(BetaDPOLoss(beta=0.1, rule=LearnableBeta()), lora=LORA, reference="none")
    checkpoint = _slim_checkpoint(module)
    del checkpoint["state_dict"]["loss.rule.log_scale"]
    checkpoint["state_dict"]["beta_rule.log_beta"] = torch.tensor(math.log(0.1) + 0.5)

    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    assert_close(module.loss.rule.log_scale.detach(), torch.tensor(0.5))
    logps = module.compute_logps(batch)
    loss, metrics = module.loss(logps)
    beta = 0.1 * math.exp(0.5)  # the old run's exp(log_beta)
    assert_close(metrics["beta/used"], torch.tensor(beta))
    h = logps.policy_chosen - logps.policy_rejected
    assert_close(loss, -F.logsigmoid(beta * h).mean())
