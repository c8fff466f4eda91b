"""Preference-guided DPO loss against values computed by hand.

Two pairs, beta = 0.5, alpha = 0.1:
pair 0: guided policy chosen -1, rejected -3; guided reference -2, -2; plain policy -2, -3.
        DPO h = (-1 + 2) - (-3 + 2) = 2, loss -logsigmoid(1) = log(1 + e^-1) = 0.313262.
        h_guided = 2, h_plain = 1, aligned (1 - 2)^2 = 1, total 0.313262 + 0.1 = 0.413262, advantage 1.
pair 1: guided policy -2, -2; guided reference -2, -2; plain policy -1, -4.
        DPO h = 0, loss log 2 = 0.693147; h_guided = 0, h_plain = 3, aligned 9, total 0.693147 + 0.9 = 1.593147,
        advantage -3.
"""

import math

import torch
from torch.testing import assert_close

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
