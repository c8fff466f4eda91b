"""PreferenceModule without a Trainer: reference modes, the loss at initialisation, and a new loss plugged in."""

import math

import pytest
import torch
from torch.testing import assert_close

import lit_align.modules
from lit_align.losses import DPOLoss, LossOutput, PreferenceLoss, dpo_loss
from lit_align.models import LoraSettings
from lit_align.modules import PreferenceModule
from lit_align.modules.reference import AdapterOffReference, CopyReference, NoReference

from ..conftest import TINY_MODEL


@pytest.fixture(scope="module")
def batch(preference_batch):
    return preference_batch


def _module(**kwargs) -> PreferenceModule:
    module = PreferenceModule(str(TINY_MODEL), **kwargs)
    module.configure_model()
    return module


class ShiftedDPO(PreferenceLoss):
    """A researcher's loss: DPO plus 1, with a metric of its own."""

    def forward(self, logps):
        out = dpo_loss(logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected)
        return LossOutput(out.losses.mean() + 1.0, {"shift": torch.tensor(1.0)})


def test_the_default_loss_is_sigmoid_dpo_with_beta_0_1():
    module = PreferenceModule(str(TINY_MODEL))
    assert isinstance(module.loss, DPOLoss) and module.loss.beta == 0.1 and module.loss.loss_type == "sigmoid"
    assert module.reference_mode == "copy" and isinstance(module.reference, CopyReference)
    assert "loss" not in module.hparams  # the run's config.yaml rebuilds the loss


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4, dropout=0.0)], ids=["full", "lora"])
def test_loss_is_log2_while_policy_equals_reference(batch, lora):
    module = _module(lora=lora, loss=DPOLoss(beta=0.3))
    assert module.reference_mode == ("adapter_off" if lora else "copy")
    assert isinstance(module.reference, AdapterOffReference if lora else CopyReference)
    loss, metrics = module.loss(module.compute_logps(batch))
    assert_close(loss, torch.tensor(math.log(2)), atol=1e-6, rtol=0)
    assert metrics["rewards/accuracies"] == 0 and metrics["rewards/margins"] == 0


def test_copy_reference_stays_frozen_and_in_eval_mode(batch):
    module = _module(reference="copy")
    reference = module.reference.model
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    module.train()
    assert not reference.training and module.policy.training
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    module.loss(module.compute_logps(batch)).loss.backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in reference.state_dict().items())
    loss, _ = module.loss(module.compute_logps(batch))
    assert loss < math.log(2)  # one step of DPO moved the policy in the preferred direction


def test_reference_free_uses_policy_logps_only(batch):
    module = _module(reference="none", loss=DPOLoss(beta=0.5))
    assert isinstance(module.reference, NoReference)
    logps = module.compute_logps(batch)
    assert torch.equal(logps.reference_chosen, torch.zeros_like(logps.reference_chosen))
    loss, _ = module.loss(logps)
    expected = -torch.nn.functional.logsigmoid(0.5 * (logps.policy_chosen - logps.policy_rejected)).mean()
    assert_close(loss, expected)


def test_ipo_gets_per_token_averaged_logps(batch):
    module = _module(reference="none", loss=DPOLoss(beta=0.5, loss_type="ipo"))
    logps = module.compute_logps(batch)
    loss, metrics = module.loss(logps)
    c, r = logps.chosen_tokens, logps.rejected_tokens
    h = logps.policy_chosen / c - logps.policy_rejected / r
    assert_close(loss, ((h - 1 / (2 * 0.5)) ** 2).mean())
    assert_close(metrics["logps/chosen"], logps.policy_chosen.mean())  # logged log-probs stay sums, as TRL's


def test_a_new_loss_plugs_in_without_a_new_module(batch):
    module = _module(loss=ShiftedDPO(), reference="copy")
    loss, metrics = module.loss(module.compute_logps(batch))
    assert_close(loss, torch.tensor(math.log(2) + 1.0), atol=1e-6, rtol=0)
    assert metrics == {"shift": torch.tensor(1.0)}


def test_bad_reference_settings_are_named():
    with pytest.raises(ValueError, match="adapter_off needs a LoRA"):
        PreferenceModule(str(TINY_MODEL), reference="adapter_off")
    with pytest.raises(ValueError, match="reference_model_name_or_path"):
        PreferenceModule(str(TINY_MODEL), reference="none", reference_model_name_or_path=str(TINY_MODEL))


def test_loss_arguments_belong_to_the_loss():
    # beta, loss_type, ... were module arguments before losses were objects; now they are the loss's.
    with pytest.raises(TypeError, match="beta"):
        PreferenceModule(str(TINY_MODEL), beta=0.1)


@pytest.mark.parametrize("name", ["DPOModule", "PreferenceLogps"])
def test_removed_names_say_where_they_went(name):
    with pytest.raises(AttributeError, match=r"lit_align\.(modules\.PreferenceModule|losses\.PreferenceLogps)"):
        getattr(lit_align.modules, name)


def test_frozen_weights_are_left_out_of_checkpoints_and_restored():
    module = _module(lora=LoraSettings(r=4))
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)


def test_simpo_is_reference_free_and_length_normalised(batch):
    module = _module(loss=DPOLoss(loss_type="simpo", beta=2.0, simpo_gamma=0.5))
    assert module.reference_mode == "none" and isinstance(module.reference, NoReference)
    assert "reference" not in module.models_to_shard()
    logps = module.compute_logps(batch)
    loss, _ = module.loss(logps)
    avg_c, avg_r = logps.policy_chosen / logps.chosen_tokens, logps.policy_rejected / logps.rejected_tokens
    assert_close(loss, -torch.nn.functional.logsigmoid(2.0 * (avg_c - avg_r) - 0.5).mean())
    with pytest.raises(ValueError, match="reference-free"):
        PreferenceModule(str(TINY_MODEL), loss=DPOLoss(loss_type="simpo"), reference="copy")


def test_rpo_adds_the_chosen_nll(batch):
    module = _module(reference="copy", loss=DPOLoss(rpo_alpha=0.5))
    logps = module.compute_logps(batch)
    loss, metrics = module.loss(logps)
    nll = (-logps.policy_chosen / logps.chosen_tokens).mean()
    assert_close(metrics["nll_loss"], nll.detach())
    assert_close(loss, torch.tensor(math.log(2)) + 0.5 * nll, atol=1e-5, rtol=0)
