"""Preference-guided DPO against values computed by hand: the formula `preference_guided_loss`, then the
`PreferenceGuidedLoss` object.

Two pairs, beta = 0.5, alpha = 0.1:
pair 0: guided policy chosen -1, rejected -3; guided reference -2, -2; plain policy -2, -3.
        DPO h = (-1 + 2) - (-3 + 2) = 2, loss -logsigmoid(1) = log(1 + e^-1) = 0.313262.
        h_guided = 2, h_plain = 1, aligned (1 - 2)^2 = 1, total 0.313262 + 0.1 = 0.413262, advantage 1.
pair 1: guided policy -2, -2; guided reference -2, -2; plain policy -1, -4.
        DPO h = 0, loss log 2 = 0.693147; h_guided = 0, h_plain = 3, aligned 9, total 0.693147 + 0.9 = 1.593147,
        advantage -3.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import DPOLoss, PreferenceGuidedLoss, PreferenceLogps
from lit_align.losses.dpo import dpo_loss
from lit_align.losses.preference_guided import preference_guided_loss


def _inputs(requires_grad: bool = False) -> list[torch.Tensor]:
    values = [[-1.0, -2.0], [-3.0, -2.0], [-2.0, -2.0], [-2.0, -2.0], [-2.0, -1.0], [-3.0, -4.0]]
    return [torch.tensor(v, requires_grad=requires_grad) for v in values]


def test_by_hand():
    out = preference_guided_loss(*_inputs(), beta=0.5, alpha=0.1)
    assert_close(out.dpo_losses, torch.tensor([math.log(1 + math.exp(-1)), math.log(2)]))
    assert_close(out.aligned_losses, torch.tensor([1.0, 9.0]))
    assert_close(out.losses, torch.tensor([0.413262, 1.593147]), atol=1e-6, rtol=0)
    assert_close(out.chosen_rewards, torch.tensor([0.5, 0.0]))
    assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.0]))
    assert_close(out.advantage, torch.tensor([1.0, -3.0]))


def test_alpha_zero_is_dpo_on_the_guided_inputs():
    guided = _inputs()[:4]
    out = preference_guided_loss(*_inputs(), beta=0.5, alpha=0.0, label_smoothing=0.1)
    dpo = dpo_loss(*guided, beta=0.5, label_smoothing=0.1)
    assert torch.equal(out.losses, dpo.losses)
    assert torch.equal(out.chosen_rewards, dpo.chosen_rewards)


def test_dpo_options_reach_the_guided_term():
    # RPO: + 0.5 * chosen_nll on each pair.
    nll = torch.tensor([1.0, 2.0])
    out = preference_guided_loss(*_inputs(), beta=0.5, alpha=0.0, rpo_alpha=0.5, chosen_nll=nll)
    assert_close(out.losses, torch.tensor([0.313262 + 0.5, 0.693147 + 1.0]), atol=1e-6, rtol=0)


def test_aligned_gradient_flows_only_into_the_plain_logps():
    # Gradient of the mean aligned term alone (alpha = 1, DPO part subtracted by differencing alpha 1 and 0).
    with_term, without = _inputs(requires_grad=True), _inputs(requires_grad=True)
    preference_guided_loss(*with_term, beta=0.5, alpha=1.0).losses.mean().backward()
    preference_guided_loss(*without, beta=0.5, alpha=0.0).losses.mean().backward()
    # The guided log-probs get the DPO gradient only: identical with and without the aligned term.
    for a, b in zip(with_term[:2], without[:2], strict=True):
        assert_close(a.grad, b.grad)
    # Plain log-probs: d/d plain_chosen of mean((h_plain - h_guided)^2) = 2 * (h_plain - h_guided) / 2 pairs,
    # so (1 - 2) = -1 and (3 - 0) = 3; the opposite sign for plain_rejected. No gradient without the term.
    assert_close(with_term[4].grad, torch.tensor([-1.0, 3.0]))
    assert_close(with_term[5].grad, torch.tensor([1.0, -3.0]))
    assert without[4].grad is None or torch.equal(without[4].grad, torch.zeros(2))
    # The reference never gets a gradient through the aligned term either.
    for a, b in zip(with_term[2:4], without[2:4], strict=True):
        assert_close(a.grad, b.grad)


def test_gradient_pushes_plain_gap_towards_guided_gap():
    inputs = _inputs(requires_grad=True)
    preference_guided_loss(*inputs, beta=0.5, alpha=1.0).losses.sum().backward()
    # pair 0: h_plain 1 < h_guided 2 -> descent raises plain chosen; pair 1: h_plain 3 > 0 -> lowers it.
    assert inputs[4].grad[0] < 0 and inputs[4].grad[1] > 0


# ---- the loss object ------------------------------------------------------------------------------------


def _pairs(inputs: list[torch.Tensor], with_plain: bool = True) -> PreferenceLogps:
    """The six log-prob tensors of `_inputs` as the module hands them over: guided in the usual fields, plain in
    plain_policy_*; chosen answers of 3 and 5 tokens, rejected of 4 and 2."""
    n = inputs[0].numel()
    plain = {"plain_policy_chosen": inputs[4], "plain_policy_rejected": inputs[5]} if with_plain else {}
    tokens = torch.tensor([3, 5])[:n], torch.tensor([4, 2])[:n]
    return PreferenceLogps(*inputs[:4], *tokens, **plain)


def _first_pair(requires_grad: bool = False) -> list[torch.Tensor]:
    return [v[:1].detach().requires_grad_(requires_grad) for v in _inputs()]


def test_loss_object_by_hand():
    # The docstring's example (pair 0): DPO log(1 + e^-1) = 0.313262, aligned (1 - 2)^2 = 1,
    # loss 0.313262 + 0.1 * 1 = 0.413262; rewards 0.5 and -0.5; advantage 2 - 1 = 1 > 0.
    loss, metrics = PreferenceGuidedLoss(beta=0.5, alpha=0.1)(_pairs(_first_pair()))
    assert_close(loss, torch.tensor(0.413262), atol=1e-6, rtol=0)
    expected = {
        "loss_components/dpo_loss": math.log(1 + math.exp(-1)),
        "loss_components/aligned_loss": 1.0,
        "preference_metrics/pref_advantage_ratio": 1.0,
        "preference_metrics/advantage": 1.0,
        "rewards/chosen": 0.5,
        "rewards/rejected": -0.5,
        "rewards/accuracies": 1.0,
        "rewards/margins": 1.0,
        "logps/chosen": -1.0,  # the guided pass
        "logps/rejected": -3.0,
    }
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        assert_close(metrics[name], torch.tensor(value), msg=name)


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "hinge"])
def test_loss_object_evaluates_the_functional_form(loss_type):
    """The mean of preference_guided_loss's per-pair losses, with every DPO option on the guided term: R-DPO's
    lengths are the token counts, RPO's NLL is -guided chosen / chosen tokens."""
    inputs = _inputs()
    logps = _pairs(inputs)
    c, r = logps.chosen_tokens, logps.rejected_tokens
    options = {"beta": 0.5, "loss_type": loss_type, "label_smoothing": 0.1, "length_penalty": 0.02, "rpo_alpha": 0.5}
    nll = -inputs[0] / c
    expected = preference_guided_loss(
        *inputs, alpha=0.1, **options, chosen_lengths=c, rejected_lengths=r, chosen_nll=nll
    )
    loss, metrics = PreferenceGuidedLoss(alpha=0.1, **options)(logps)
    assert_close(loss, expected.losses.mean())
    assert_close(metrics["loss_components/dpo_loss"], expected.dpo_losses.mean())
    assert_close(metrics["loss_components/aligned_loss"], torch.tensor(5.0))  # (1 + 9) / 2
    assert_close(metrics["preference_metrics/advantage"], torch.tensor(-1.0))  # (1 - 3) / 2
    assert_close(metrics["preference_metrics/pref_advantage_ratio"], torch.tensor(0.5))  # pair 0 only
    assert_close(metrics["rewards/chosen"], expected.chosen_rewards.mean())
    assert_close(metrics["nll_loss"], nll.mean())


def test_loss_object_refuses_averaged_loss_types():
    for loss_type in ("ipo", "simpo"):
        with pytest.raises(ValueError, match=loss_type):
            PreferenceGuidedLoss(loss_type=loss_type)


def test_loss_object_needs_the_plain_logps():
    with pytest.raises(ValueError, match="plain"):
        PreferenceGuidedLoss()(_pairs(_inputs(), with_plain=False))


def test_loss_object_consistency_gradient_stops_at_the_guided_logps():
    # Pair 0, beta 0.5, alpha 0.1. Guided policy: the DPO gradient only, -/+ beta * sigmoid(-beta * h) =
    # -/+ 0.5 * sigmoid(-1) = -/+ 0.134471, as DPOLoss alone gives. Plain policy: d/dplain_chosen of
    # 0.1 * (h_plain - h_guided)^2 = 0.1 * 2 * (1 - 2) = -0.2, and +0.2 for plain_rejected.
    guided = _first_pair(requires_grad=True)
    PreferenceGuidedLoss(beta=0.5, alpha=0.1)(_pairs(guided)).loss.backward()
    alone = _first_pair(requires_grad=True)
    DPOLoss(beta=0.5)(_pairs(alone)).loss.backward()
    dpo_gradient = 0.5 / (1 + math.e)
    assert_close(guided[0].grad, torch.tensor([-dpo_gradient]))
    assert_close(guided[1].grad, torch.tensor([dpo_gradient]))
    for with_term, without in zip(guided[:4], alone[:4], strict=True):  # guided policy and reference
        assert_close(with_term.grad, without.grad)
    assert_close(guided[4].grad, torch.tensor([-0.2]))
    assert_close(guided[5].grad, torch.tensor([0.2]))
