"""The β rules of β-DPO against values computed by hand.

A rule receives the loss's β0 on every call: ``rule(margins, beta0, gather=...)``. The running example is the
margins of test_beta_dpo_loss.py's four pairs, M = [3, 2, 0, -1]: batch mean 1, deviations 2, 1, -1, -2,
squares sum to 10, unbiased variance 10/3, std sqrt(10/3) = 1.825742.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses.beta_rules import BatchAdaptiveBeta, FixedBeta, LearnableBeta
from lit_align.losses.dpo import dpo_loss

MARGINS = torch.tensor([3.0, 2.0, 0.0, -1.0])
BATCH_STD = math.sqrt(10 / 3)


def test_batch_adaptive_rule_by_hand():
    # keep_fraction 1: statistics 0.1 and 0.182574 after the batch; beta = 0.1 * (1 + 0.6 * (1 - 0.1)) = 0.154
    rule = BatchAdaptiveBeta(alpha=0.6, keep_fraction=1.0).train()
    decision = rule(MARGINS, 0.1)
    assert_close(rule.margin_mean, torch.tensor(0.1))
    assert_close(rule.margin_std, torch.tensor(0.1 * BATCH_STD))
    assert_close(decision.beta, torch.tensor(0.154))
    assert decision.keep.all()
    metrics = rule.metrics()
    assert set(metrics) == {"beta/used", "margin/ema_mean", "margin/ema_std", "filter/kept_fraction"}
    assert_close(metrics["beta/used"], torch.tensor(0.154))
    assert_close(metrics["filter/kept_fraction"], torch.tensor(1.0))
    # default keep_fraction 0.8 keeps floor(3.2) = 3 of the 4 pairs
    assert int(BatchAdaptiveBeta().train()(MARGINS, 0.1).keep.sum()) == 3


def test_batch_adaptive_rule_leaves_statistics_alone_in_eval_mode():
    rule = BatchAdaptiveBeta().train()
    rule(MARGINS, 0.2)
    before = (rule.margin_mean.clone(), rule.margin_std.clone())
    decision = rule.eval()(MARGINS, 0.2)
    assert torch.equal(rule.margin_mean, before[0]) and torch.equal(rule.margin_std, before[1])
    assert decision.keep.all() and decision.beta.item() == pytest.approx(0.2)


def test_batch_adaptive_rule_uses_every_rank_through_gather():
    # a second rank holds [1, 1, 1, 1]: the gathered 8 margins have mean 1 and std sqrt(10 / 7), so the
    # statistics are 0.1 and 0.1 * 1.195229 (not 0.182574), beta 0.1 * (1 + 0.6 * (1 - 0.1)) = 0.154
    def gather(tensor):
        other = torch.ones_like(tensor)  # the other rank's margins, then its keep mask (all kept)
        return torch.stack([tensor, other])

    rule = BatchAdaptiveBeta(keep_fraction=1.0).train()
    decision = rule(MARGINS, 0.1, gather=gather)
    assert_close(rule.margin_std, torch.tensor(0.1 * math.sqrt(10 / 7)))
    assert_close(decision.beta, torch.tensor(0.154))
    assert decision.keep.shape == (4,)


def test_fixed_rule_keeps_all_at_a_constant_beta():
    rule = FixedBeta()
    assert rule.metrics() == {}  # nothing decided yet
    decision = rule(MARGINS, 0.3)
    assert decision.keep.all() and decision.beta.item() == pytest.approx(0.3)
    assert_close(rule.metrics()["beta/used"], torch.tensor(0.3))


def test_learnable_beta_gradient_raises_beta_on_positive_margins():
    # beta = beta0 * exp(log_scale), log_scale = 0 at the start, so dL/dlog_scale = beta * dL/dbeta = dL/dlog(beta).
    # one pair, beta0 = 0.1, h = 2: -beta * h * sigmoid(-beta * h) = -0.2 * sigmoid(-0.2) = -0.090033
    policy_chosen, policy_rejected = torch.tensor([-1.0]), torch.tensor([-3.0])
    zeros = torch.zeros(1)
    rule = LearnableBeta()
    assert rule.log_scale.item() == 0.0 and rule.metrics() == {}
    decision = rule(torch.tensor([2.0]), 0.1)
    dpo_loss(policy_chosen, policy_rejected, zeros, zeros, beta=decision.beta).losses.mean().backward()
    assert_close(rule.log_scale.grad, torch.tensor(-0.2 / (1 + math.exp(0.2))))
    assert rule.log_scale.grad < 0  # gradient descent raises beta
    rule.log_scale.grad = None
    dpo_loss(policy_rejected, policy_chosen, zeros, zeros, beta=rule(zeros, 0.1).beta).losses.mean().backward()
    assert rule.log_scale.grad > 0  # negative margins lower it
    assert_close(rule.metrics()["beta/used"], torch.tensor(0.1))


def test_bad_rule_arguments_are_named():
    with pytest.raises(ValueError, match="keep_fraction"):
        BatchAdaptiveBeta(keep_fraction=0.0)
    with pytest.raises(ValueError, match="momentum"):
        BatchAdaptiveBeta(momentum=1.0)


def test_learnable_beta_scales_the_beta0_it_receives():
    # beta = beta0 * exp(log_scale): log_scale ln 3 gives 0.1 * 3 = 0.3 with beta0 0.1 and 0.6 with beta0 0.2
    rule = LearnableBeta()
    with torch.no_grad():
        rule.log_scale.fill_(math.log(3))
    assert_close(rule(MARGINS, 0.1).beta, torch.tensor(0.3))
    assert_close(rule(MARGINS, 0.2).beta, torch.tensor(0.6))
    assert rule(MARGINS, 0.2).keep.all()
