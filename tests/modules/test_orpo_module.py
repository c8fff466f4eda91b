"""ORPOModule on the tiny model, without a Trainer: no reference, the NLL term, the loss, and its gradient."""

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import orpo_loss
from lit_align.models import LoraSettings
from lit_align.modules.orpo import ORPOModule

from ..conftest import TINY_MODEL


@pytest.fixture(scope="module")
def batch(preference_batch):
    return preference_batch


def _module(**kwargs) -> ORPOModule:
    module = ORPOModule(str(TINY_MODEL), **kwargs)
    module.configure_model()
    return module


def _manual_chosen_sequence_nll(module: ORPOModule, batch) -> torch.Tensor:
    """Mean NLL of every non-pad token of each chosen row (the first token has no prediction), by hand."""
    n_pairs = batch["input_ids"].shape[0] // 2
    ids, mask = batch["input_ids"][:n_pairs], batch["attention_mask"][:n_pairs]
    with torch.no_grad():
        logits = module.policy(input_ids=ids, attention_mask=mask).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    target = mask[:, 1:].float()
    return -(logps * target).sum(-1) / target.sum(-1)


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4, dropout=0.0)], ids=["full", "lora"])
def test_no_reference_model_and_policy_is_the_only_model(lora):
    module = _module(lora=lora)
    assert module.reference_mode == "none" and module.reference_model is None
    assert [name for name, _ in module.named_children()] == ["policy"]


def test_chosen_sequence_nll_covers_prompt_and_answer(batch):
    module = _module()
    module.eval()
    logps = module.compute_logps(batch)
    assert torch.equal(logps.reference_chosen, torch.zeros_like(logps.reference_chosen))
    expected = _manual_chosen_sequence_nll(module, batch)
    assert_close(logps.chosen_sequence_nll, expected, atol=1e-5, rtol=1e-5)
    # The prompt makes it differ from the answer-only NLL.
    assert not torch.allclose(expected, -logps.policy_chosen / logps.chosen_tokens)

    loss, metrics = module.preference_loss(logps)
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
    module = _module(nll_on_prompt=False, lam=0.5)
    assert not module.needs_chosen_sequence_nll
    logps = module.compute_logps(batch)
    assert logps.chosen_sequence_nll is None
    avg_c, avg_r = logps.policy_chosen / logps.chosen_tokens, logps.policy_rejected / logps.rejected_tokens
    loss, metrics = module.preference_loss(logps)
    assert_close(metrics["nll_loss"], (-avg_c).mean())
    assert_close(loss, orpo_loss(avg_c, avg_r, -avg_c, lam=0.5).losses.mean())


@pytest.mark.parametrize("nll_on_prompt", [True, False])
def test_gradient_step_raises_the_chosen_log_prob(batch, nll_on_prompt):
    module = _module(lora=LoraSettings(r=4, dropout=0.0), nll_on_prompt=nll_on_prompt)
    before = module.compute_logps(batch)
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.01)
    module.preference_loss(before)[0].backward()
    optimizer.step()
    with torch.no_grad():
        after = module.compute_logps(batch)
    assert after.policy_chosen.mean() > before.policy_chosen.mean()
    assert module.preference_loss(after)[0] < module.preference_loss(before)[0]


def test_reference_and_dpo_arguments_are_refused():
    with pytest.raises(ValueError, match="no reference model"):
        ORPOModule(str(TINY_MODEL), reference="copy")
    with pytest.raises(ValueError, match="does not use DPO's beta"):
        ORPOModule(str(TINY_MODEL), beta=0.2)
    module = ORPOModule(str(TINY_MODEL), reference="none", beta=0.1)  # the defaults a saved config holds
    assert module.hparams["lam"] == 0.2 and module.hparams["reference"] == "none"
