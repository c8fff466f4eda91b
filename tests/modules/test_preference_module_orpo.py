"""PreferenceModule with ORPOLoss on the tiny model, without a Trainer: no reference, the NLL term the module
computes, the loss, and its gradient."""

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import ORPOLoss, orpo_loss
from lit_align.models import LoraSettings
from lit_align.modules import PreferenceModule
from lit_align.modules.reference import NoReference

from ..conftest import TINY_MODEL


@pytest.fixture(scope="module")
def batch(preference_batch):
    return preference_batch


def _module(loss: ORPOLoss | None = None, **kwargs) -> PreferenceModule:
    module = PreferenceModule(str(TINY_MODEL), loss=loss if loss is not None else ORPOLoss(), **kwargs)
    module.configure_model()
    return module


def _manual_chosen_sequence_nll(module: PreferenceModule, batch) -> torch.Tensor:
    """Mean NLL of every non-pad token of each chosen row (the first token has no prediction), by hand."""
    n_pairs = batch.input_ids.shape[0] // 2
    ids, mask = batch.input_ids[:n_pairs], batch.attention_mask[:n_pairs]
    with torch.no_grad():
        logits = module.policy(input_ids=ids, attention_mask=mask).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    target = mask[:, 1:].float()
    return -(logps * target).sum(-1) / target.sum(-1)


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4, dropout=0.0)], ids=["full", "lora"])
def test_no_reference_model_and_policy_is_the_only_model(lora):
    module = _module(lora=lora)
    assert module.reference_mode == "none" and isinstance(module.reference, NoReference)
    with_weights = [name for name, child in module.named_children() if any(True for _ in child.parameters())]
    assert with_weights == ["policy"]
    assert list(module.models_to_shard()) == ["policy"]


def test_chosen_sequence_nll_covers_prompt_and_answer(batch):
    module = _module()
    module.eval()
    logps = module.compute_logps(batch)
    assert torch.equal(logps.reference_chosen, torch.zeros_like(logps.reference_chosen))
    expected = _manual_chosen_sequence_nll(module, batch)
    assert_close(logps.chosen_sequence_nll, expected, atol=1e-5, rtol=1e-5)
    # The prompt makes it differ from the answer-only NLL.
    assert not torch.allclose(expected, -logps.policy_chosen / logps.chosen_tokens)

    loss, metrics = module.loss(logps)
    avg_c, avg_r = logps.policy_chosen / logps.chosen_tokens, logps.policy_rejected / logps.rejected_tokens
    out = orpo_loss(avg_c, avg_r, expected, lam=0.2)
    assert_close(loss, out.losses.mean(), atol=1e-5, rtol=1e-5)
    assert_close(metrics["nll_loss"], expected.mean(), atol=1e-5, rtol=1e-5)
    assert_close(metrics["log_odds_ratio"], out.log_odds_ratio.mean(), atol=1e-5, rtol=1e-5)
    assert_close(metrics["log_odds_chosen"], out.log_odds_chosen.mean(), atol=1e-5, rtol=1e-5)
    assert_close(metrics["rewards/chosen"], 0.2 * avg_c.mean())
    assert_close(metrics["logps/chosen"], avg_c.mean())  # averages, as TRL's ORPO logs them
    assert set(metrics) >= {"rewards/accuracies", "rewards/margins", "rewards/rejected", "logps/rejected"}


def test_nll_on_answer_only(batch):
    module = _module(ORPOLoss(nll_on_prompt=False, lam=0.5))
    assert not module.loss.sequence_nll
    logps = module.compute_logps(batch)
    assert logps.chosen_sequence_nll is None  # the module skips the extra pass the loss does not need
    avg_c, avg_r = logps.policy_chosen / logps.chosen_tokens, logps.policy_rejected / logps.rejected_tokens
    loss, metrics = module.loss(logps)
    assert_close(metrics["nll_loss"], (-avg_c).mean())
    assert_close(loss, orpo_loss(avg_c, avg_r, -avg_c, lam=0.5).losses.mean())


@pytest.mark.parametrize("nll_on_prompt", [True, False])
def test_gradient_step_raises_the_chosen_log_prob(batch, nll_on_prompt):
    module = _module(ORPOLoss(nll_on_prompt=nll_on_prompt), lora=LoraSettings(r=4, dropout=0.0))
    before = module.compute_logps(batch)
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.01)
    module.loss(before).loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = module.compute_logps(batch)
    assert after.policy_chosen.mean() > before.policy_chosen.mean()
    assert module.loss(after).loss < module.loss(before).loss


@pytest.mark.parametrize("reference", ["copy", "adapter_off", "precomputed"])
def test_a_reference_is_refused(reference):
    with pytest.raises(ValueError, match="reference-free"):
        PreferenceModule(str(TINY_MODEL), loss=ORPOLoss(), reference=reference)


def test_reference_none_is_accepted_and_the_loss_stays_out_of_hparams():
    module = PreferenceModule(str(TINY_MODEL), loss=ORPOLoss(lam=0.3), reference="none")
    assert module.reference_mode == "none" and module.loss.lam == 0.3
    assert module.hparams["reference"] == "none" and "loss" not in module.hparams
