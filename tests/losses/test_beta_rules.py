"""The β rules of β-DPO against values computed by hand.

A rule receives the loss's β0 on every call: ``rule(margins, beta0, gather=...)``. The running example is the
margins of test_beta_dpo_loss.py's four pairs, M = [3, 2, 0, -1]: batch mean 1, deviations 2, 1, -1, -2,
squares sum to 10, unbiased variance 10/3, std sqrt(10/3) = 1.825742.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses.beta_margins import margin_pair_beta
from lit_align.losses.beta_rules import BatchAdaptiveBeta, FixedBeta, LearnableBeta, MarginBeta
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


def test_margin_pair_beta_by_hand():
    # beta0 0.1, alpha 0.5, M0 1, sigma 2: z = [1, 0.5, -0.5, -1], tanh z = [0.761594, 0.462117, -0.462117, -0.761594]
    # beta = 0.1 * (1 + 0.5 * tanh z) = [0.138080, 0.123106, 0.076894, 0.061920]
    beta = margin_pair_beta(MARGINS, 0.1, 0.5, 1.0, 2.0)
    assert_close(beta, torch.tensor([0.138080, 0.123106, 0.076894, 0.061920]), atol=1e-6, rtol=0)
    # sigma 0 (every margin so far equal): z = 0, beta0 for every pair
    assert_close(margin_pair_beta(MARGINS, 0.1, 0.5, 1.0, 0.0), torch.full((4,), 0.1))
    # far from the mean tanh saturates: beta stays inside (0.05, 0.15)
    far = margin_pair_beta(torch.tensor([1e6, -1e6]), 0.1, 0.5, 0.0, 1.0)
    assert_close(far, torch.tensor([0.15, 0.05]))


def test_margin_rule_from_zero_statistics_by_hand():
    # the update comes first: M0 = 0.1, sigma = 0.182574 (as BatchAdaptiveBeta); z = (M - 0.1) / 0.182574 =
    # [15.88, 10.41, -0.547723, -6.02], tanh(-0.547723) = -0.498811, so beta = [0.15, 0.15, 0.075059, 0.050001]
    rule = MarginBeta(alpha=0.5).train()
    decision = rule(MARGINS, 0.1)
    assert_close(rule.margin_mean, torch.tensor(0.1))
    assert_close(rule.margin_std, torch.tensor(0.1 * BATCH_STD))
    assert_close(decision.beta, torch.tensor([0.15, 0.15, 0.075059, 0.050001]), atol=1e-6, rtol=0)
    assert decision.keep.all() and decision.keep.shape == (4,)
    metrics = rule.metrics()
    assert set(metrics) == {"beta/used", "beta/used_std", "margin/ema_mean", "margin/ema_std"}
    assert_close(metrics["beta/used"], decision.beta.mean())
    assert_close(metrics["beta/used_std"], decision.beta.std(correction=0))


def test_margin_rule_gives_beta0_at_the_first_step_and_in_eval_mode():
    # policy == reference: every margin 0, sigma stays 0, so z = 0 and beta0 for every pair
    rule = MarginBeta().train()
    assert_close(rule(torch.zeros(4), 0.1).beta, torch.full((4,), 0.1))
    rule(MARGINS, 0.1)
    before = (rule.margin_mean.clone(), rule.margin_std.clone())
    decision = rule.eval()(MARGINS, 0.2)
    assert torch.equal(rule.margin_mean, before[0]) and torch.equal(rule.margin_std, before[1])
    assert_close(decision.beta, torch.full((4,), 0.2))
    assert decision.keep.all()
    assert rule.metrics()["beta/used_std"].item() == 0.0


def test_margin_rule_uses_every_rank_through_gather():
    # the other rank holds [1, 1, 1, 1]: statistics from the 8 margins, sigma = 0.1 * sqrt(10 / 7) = 0.119523;
    # beta is still one per local pair: pair 3 has z = (0 - 0.1) / 0.119523 = -0.836660, tanh -0.684036,
    # beta 0.1 * (1 + 0.5 * -0.684036) = 0.065798
    rule = MarginBeta().train()
    decision = rule(MARGINS, 0.1, gather=lambda tensor: torch.stack([tensor, torch.ones_like(tensor)]))
    assert_close(rule.margin_std, torch.tensor(0.1 * math.sqrt(10 / 7)))
    assert decision.beta.shape == (4,)
    assert_close(decision.beta[2], torch.tensor(0.065798), atol=1e-6, rtol=0)


def test_bad_margin_rule_arguments_are_named():
    for alpha in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            MarginBeta(alpha=alpha)
    with pytest.raises(ValueError, match="momentum"):
        MarginBeta(momentum=1.0)
    assert_close(MarginBeta(alpha=0.0).train()(MARGINS, 0.1).beta, torch.full((4,), 0.1))
