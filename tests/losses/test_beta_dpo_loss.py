"""β-DPO arithmetic and the β rules against values computed by hand.

The running example, four pairs (policy chosen, policy rejected, reference chosen, reference rejected):

    pair 1: -1, -5, -2, -3  ->  M = (-1 + 2) - (-5 + 3) = 1 + 2 = 3
    pair 2: -2, -4, -2, -2  ->  M = 0 - (-2) = 2
    pair 3: -3, -3, -3, -3  ->  M = 0
    pair 4: -4, -1, -3, -1  ->  M = -1 - 0 = -1

Batch mean (3 + 2 + 0 - 1) / 4 = 1; deviations 2, 1, -1, -2, squares sum to 10, unbiased variance 10/3,
std sqrt(10/3) = 1.825742.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses.beta_dpo import (
    MIN_BETA,
    batch_beta,
    beta_dpo_margins,
    filter_pairs,
    kept_count,
    margin_weights,
    update_margin_stats,
)
from lit_align.losses.beta_rules import BatchAdaptiveBeta, FixedBeta, LearnableBeta
from lit_align.losses.dpo import dpo_loss

LOGPS = (
    torch.tensor([-1.0, -2.0, -3.0, -4.0]),
    torch.tensor([-5.0, -4.0, -3.0, -1.0]),
    torch.tensor([-2.0, -2.0, -3.0, -3.0]),
    torch.tensor([-3.0, -2.0, -3.0, -1.0]),
)
MARGINS = torch.tensor([3.0, 2.0, 0.0, -1.0])
BATCH_STD = math.sqrt(10 / 3)
ZERO = torch.zeros(())


def test_margins_by_hand_and_detached():
    policy_chosen = LOGPS[0].clone().requires_grad_()
    margins = beta_dpo_margins(policy_chosen, *LOGPS[1:])
    assert_close(margins, MARGINS)
    assert not margins.requires_grad


def test_running_stats_one_and_two_updates_from_zero():
    # one update: 0.9 * 0 + 0.1 * 1 = 0.1 and 0.1 * 1.825742 = 0.182574
    mean, std = update_margin_stats(ZERO, ZERO, MARGINS)
    assert_close(mean, torch.tensor(0.1))
    assert_close(std, torch.tensor(0.1 * BATCH_STD))
    assert_close(std, torch.tensor(0.182574), atol=1e-6, rtol=0)
    # two updates: 0.9 * 0.1 + 0.1 * 1 = 0.19 and 0.9 * 0.182574 + 0.182574 = 1.9 * 0.182574 = 0.346891
    mean, std = update_margin_stats(mean, std, MARGINS)
    assert_close(mean, torch.tensor(0.19))
    assert_close(std, torch.tensor(0.346891), atol=1e-6, rtol=0)


def test_running_stats_momentum_and_one_pair_batch():
    # momentum 0.5 from (1, 1): mean 0.5 + 0.5 * 1 = 1, std 0.5 + 0.5 * 1.825742 = 1.412871
    mean, std = update_margin_stats(torch.tensor(1.0), torch.tensor(1.0), MARGINS, momentum=0.5)
    assert_close(mean, torch.tensor(1.0))
    assert_close(std, torch.tensor(0.5 + 0.5 * BATCH_STD))
    # a single margin has no unbiased std: the std average stays, the mean moves (0.9 * 1 + 0.1 * 5 = 1.4)
    mean, std = update_margin_stats(torch.tensor(1.0), torch.tensor(2.0), torch.tensor([5.0]))
    assert_close(mean, torch.tensor(1.4))
    assert_close(std, torch.tensor(2.0))


def test_gaussian_weights_by_hand():
    # M0 = 1, sigma = 2: z = [1, 0.5, -0.5, -1] -> exp(-z^2 / 2) = [e^-0.5, e^-0.125, e^-0.125, e^-0.5]
    expected = torch.tensor([math.exp(-0.5), math.exp(-0.125), math.exp(-0.125), math.exp(-0.5)])
    assert_close(margin_weights(MARGINS, 1.0, 2.0), expected)
    assert_close(margin_weights(MARGINS, torch.tensor(1.0), torch.tensor(2.0)), expected)
    assert_close(margin_weights(MARGINS, 0.7, 0.0), torch.ones(4))  # sigma = 0: uniform, no division by zero


def test_batch_beta_by_hand():
    # beta0 = 0.1, alpha = 0.6, M0 = 0.19, kept margins [3, 2, 0] (mean 5/3):
    # 0.1 * (1 + 0.6 * (1.666667 - 0.19)) = 0.1 * 1.886 = 0.1886
    beta = batch_beta(0.1, 0.6, torch.tensor([3.0, 2.0, 0.0]), torch.tensor(0.19))
    assert_close(beta, torch.tensor(0.1886))
    # alpha 1, kept mean -5, M0 0: 0.1 * (1 - 5) = -0.4, clamped to 1e-3
    assert_close(batch_beta(0.1, 1.0, torch.tensor([-5.0]), 0.0), torch.tensor(MIN_BETA))
    assert_close(batch_beta(0.1, 0.0, MARGINS, 123.0), torch.tensor(0.1))
    assert not batch_beta(0.1, 0.6, MARGINS.clone().requires_grad_(), 0.0).requires_grad


def test_no_scaling_and_no_filtering_is_exactly_dpo():
    beta0, mean, std = 0.1, ZERO, ZERO
    for _ in range(2):  # non-zero running statistics before the batch
        mean, std = update_margin_stats(mean, std, MARGINS * 3)
    margins = beta_dpo_margins(*LOGPS)
    mean, std = update_margin_stats(mean, std, margins)
    keep = filter_pairs(margins, mean, std, keep_fraction=1.0)
    beta = batch_beta(beta0, 0.0, margins[keep], mean)
    losses = dpo_loss(*LOGPS, beta=beta).losses
    assert keep.all()
    assert torch.equal(losses[keep].mean(), dpo_loss(*LOGPS, beta=beta0).losses.mean())


def test_kept_count_is_the_authors_floor():
    # int(n * (1 - rho)), at least one pair; the float error of 0.57 * 100 = 56.999... is absorbed
    assert [kept_count(n, 0.8) for n in (1, 2, 4, 5, 16, 64)] == [1, 1, 3, 4, 12, 51]
    assert kept_count(100, 0.57) == 57 and kept_count(7, 1.0) == 7


@pytest.mark.parametrize("n, keep_fraction", [(4, 0.8), (16, 0.8), (10, 0.5), (7, 0.3), (3, 1.0)])
def test_filter_keeps_the_count_and_never_an_index_twice(n, keep_fraction):
    generator = torch.Generator().manual_seed(0)
    margins = torch.randn(n, generator=generator) * 3
    for _ in range(50):
        keep = filter_pairs(margins, 0.5, 1.0, keep_fraction, generator=generator)
        # a mask of n entries holding kept_count Trues: a repeated index would leave fewer
        assert keep.dtype == torch.bool and keep.shape == (n,)
        assert int(keep.sum()) == kept_count(n, keep_fraction)


def test_filter_is_reproducible_with_a_seeded_generator():
    margins = torch.linspace(-3, 3, 32)

    def draws(seed):
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([filter_pairs(margins, 0.0, 1.5, 0.8, generator=generator) for _ in range(5)])

    assert torch.equal(draws(7), draws(7))
    assert not torch.equal(draws(7), draws(8))


def test_a_pair_far_from_the_mean_is_dropped_far_more_often():
    # nine margins at M0 (weight 1) and one 3 sigma away (weight e^-4.5 = 0.011); 8 of 10 are kept
    margins = torch.tensor([0.0] * 9 + [6.0])
    generator = torch.Generator().manual_seed(0)
    kept = torch.stack([filter_pairs(margins, 0.0, 2.0, 0.8, generator=generator) for _ in range(2000)]).float()
    typical, outlier = kept[:, 0].mean(), kept[:, 9].mean()
    assert outlier < 0.05 and typical > 0.85, (typical, outlier)
    # sigma = 0: uniform, each pair kept 8 times in 10
    uniform = torch.stack([filter_pairs(margins, 0.0, 0.0, 0.8, generator=generator) for _ in range(2000)])
    assert_close(uniform.float().mean(0), torch.full((10,), 0.8), atol=0.05, rtol=0)


def test_filter_survives_weights_that_all_underflow():
    # z = 1000, 2000, 3000: every exp(-z^2 / 2) is 0 in float32; the closest pair is still drawn first
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        keep = filter_pairs(torch.tensor([100.0, 200.0, 300.0]), 0.0, 0.1, 0.67, generator=generator)
        assert keep[0] and int(keep.sum()) == 2


# ---- the rules ------------------------------------------------------------------------------------------


def test_batch_adaptive_rule_by_hand():
    # keep_fraction 1: statistics 0.1 and 0.182574 after the batch; beta = 0.1 * (1 + 0.6 * (1 - 0.1)) = 0.154
    rule = BatchAdaptiveBeta(beta=0.1, alpha=0.6, keep_fraction=1.0).train()
    decision = rule(MARGINS)
    assert_close(rule.margin_mean, torch.tensor(0.1))
    assert_close(rule.margin_std, torch.tensor(0.1 * BATCH_STD))
    assert_close(decision.beta, torch.tensor(0.154))
    assert decision.keep.all()
    metrics = rule.metrics()
    assert set(metrics) == {"beta/used", "margin/ema_mean", "margin/ema_std", "filter/kept_fraction"}
    assert_close(metrics["beta/used"], torch.tensor(0.154))
    assert_close(metrics["filter/kept_fraction"], torch.tensor(1.0))
    # default keep_fraction 0.8 keeps floor(3.2) = 3 of the 4 pairs
    assert int(BatchAdaptiveBeta().train()(MARGINS).keep.sum()) == 3


def test_batch_adaptive_rule_leaves_statistics_alone_in_eval_mode():
    rule = BatchAdaptiveBeta(beta=0.2).train()
    rule(MARGINS)
    before = (rule.margin_mean.clone(), rule.margin_std.clone())
    decision = rule.eval()(MARGINS)
    assert torch.equal(rule.margin_mean, before[0]) and torch.equal(rule.margin_std, before[1])
    assert decision.keep.all() and decision.beta.item() == pytest.approx(0.2)


def test_batch_adaptive_rule_uses_every_rank_through_gather():
    # a second rank holds [1, 1, 1, 1]: the gathered 8 margins have mean 1 and std sqrt(10 / 7), so the
    # statistics are 0.1 and 0.1 * 1.195229 (not 0.182574), beta 0.1 * (1 + 0.6 * (1 - 0.1)) = 0.154
    def gather(tensor):
        other = torch.ones_like(tensor)  # the other rank's margins, then its keep mask (all kept)
        return torch.stack([tensor, other])

    rule = BatchAdaptiveBeta(keep_fraction=1.0).train()
    decision = rule(MARGINS, gather=gather)
    assert_close(rule.margin_std, torch.tensor(0.1 * math.sqrt(10 / 7)))
    assert_close(decision.beta, torch.tensor(0.154))
    assert decision.keep.shape == (4,)


def test_fixed_rule_keeps_all_at_a_constant_beta():
    decision = FixedBeta(beta=0.3)(MARGINS)
    assert decision.keep.all() and decision.beta.item() == pytest.approx(0.3)
    assert_close(FixedBeta(beta=0.3).metrics()["beta/used"], torch.tensor(0.3))


def test_learnable_beta_gradient_raises_beta_on_positive_margins():
    # one pair, beta = 0.1, h = 2: dL/dlog(beta) = -beta * h * sigmoid(-beta * h) = -0.2 * sigmoid(-0.2) = -0.090033
    policy_chosen, policy_rejected = torch.tensor([-1.0]), torch.tensor([-3.0])
    zeros = torch.zeros(1)
    rule = LearnableBeta(beta=0.1)
    decision = rule(torch.tensor([2.0]))
    dpo_loss(policy_chosen, policy_rejected, zeros, zeros, beta=decision.beta).losses.mean().backward()
    assert_close(rule.log_beta.grad, torch.tensor(-0.2 / (1 + math.exp(0.2))))
    assert rule.log_beta.grad < 0  # gradient descent raises beta
    rule.log_beta.grad = None
    dpo_loss(policy_rejected, policy_chosen, zeros, zeros, beta=rule(zeros).beta).losses.mean().backward()
    assert rule.log_beta.grad > 0  # negative margins lower it
    assert_close(rule.metrics()["beta/used"], torch.tensor(0.1))


def test_bad_rule_arguments_are_named():
    with pytest.raises(ValueError, match="keep_fraction"):
        BatchAdaptiveBeta(keep_fraction=0.0)
    with pytest.raises(ValueError, match="momentum"):
        BatchAdaptiveBeta(momentum=1.0)
    with pytest.raises(ValueError, match="beta"):
        FixedBeta(beta=0.0)
