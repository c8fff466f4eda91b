"""β-DPO's arithmetic (`beta_margins`) and the `BetaDPOLoss` object against values computed by hand (the rules
are in test_beta_rules.py).

The running example, four pairs (policy chosen, policy rejected, reference chosen, reference rejected):

    pair 1: -1, -5, -2, -3  ->  M = (-1 + 2) - (-5 + 3) = 1 + 2 = 3
    pair 2: -2, -4, -2, -2  ->  M = 0 - (-2) = 2
    pair 3: -3, -3, -3, -3  ->  M = 0
    pair 4: -4, -1, -3, -1  ->  M = -1 - 0 = -1

Batch mean (3 + 2 + 0 - 1) / 4 = 1; deviations 2, 1, -1, -2, squares sum to 10, unbiased variance 10/3,
std sqrt(10/3) = 1.825742. Log-ratios (policy - reference): chosen [1, 0, 0, -1], rejected [-2, -2, 0, 0].
"""

import math
from functools import partial

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import BetaDPOLoss, DPOLoss, PreferenceLogps
from lit_align.losses.beta_margins import (
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


# ---- the loss object ------------------------------------------------------------------------------------


def _pairs(*logps: torch.Tensor) -> PreferenceLogps:
    """Log-probs as the module hands them to a loss; β-DPO reads sums and never the token counts."""
    tokens = torch.full((logps[0].numel(),), 5)
    return PreferenceLogps(*logps, chosen_tokens=tokens, rejected_tokens=tokens)


def _random_pairs(n: int = 8, seed: int = 0) -> PreferenceLogps:
    generator = torch.Generator().manual_seed(seed)
    return _pairs(*(-30 * torch.rand(4, n, generator=generator)))


@pytest.mark.parametrize(
    "make_rule", [FixedBeta, partial(BatchAdaptiveBeta, alpha=0.0, keep_fraction=1.0)], ids=["fixed", "alpha0"]
)
def test_beta_dpo_loss_without_scaling_or_filtering_is_dpo(make_rule):
    logps = _random_pairs()
    loss, metrics = BetaDPOLoss(beta=0.3, rule=make_rule(), label_smoothing=0.1).train()(logps)
    dpo_loss_value, dpo_metrics = DPOLoss(beta=0.3, label_smoothing=0.1)(logps)
    assert_close(loss, dpo_loss_value)
    for name, value in dpo_metrics.items():  # rewards/*, logps/*
        assert_close(metrics[name], value, msg=name)
    assert_close(metrics["beta/used"], torch.tensor(0.3))


def test_default_rule_state_is_in_the_state_dict_and_moves_only_in_training():
    loss = BetaDPOLoss(beta=0.1)
    assert isinstance(loss.rule, BatchAdaptiveBeta)
    assert set(loss.state_dict()) == {"rule.margin_mean", "rule.margin_std"}
    # training: one batch from zero gives 0.1 * mean(M) = 0.1 and 0.1 * 1.825742 = 0.182574
    loss.train()(_pairs(*LOGPS))
    state = loss.state_dict()
    assert_close(state["rule.margin_mean"], torch.tensor(0.1))
    assert_close(state["rule.margin_std"], torch.tensor(0.1 * BATCH_STD))
    # validation: statistics untouched, every pair at beta0, so the loss is DPO's
    eval_loss, metrics = loss.eval()(_pairs(*LOGPS))
    assert_close(loss.rule.margin_mean, torch.tensor(0.1))
    assert_close(loss.rule.margin_std, torch.tensor(0.1 * BATCH_STD))
    assert_close(eval_loss, DPOLoss(beta=0.1)(_pairs(*LOGPS)).loss)
    assert_close(metrics["filter/kept_fraction"], torch.tensor(1.0))


def test_logged_rewards_use_beta0_when_the_rule_changes_beta():
    # The rule raises beta to 0.1 * (1 + 0.6 * (1 - 0.1)) = 0.154 (test_beta_rules.py); the loss uses 0.154, the
    # rewards keep 0.1: chosen 0.1 * mean([1, 0, 0, -1]) = 0, rejected 0.1 * mean([-2, -2, 0, 0]) = -0.1,
    # margins 0.1 * mean(M) = 0.1 (0.154 with the rule's beta); chosen wins on pairs 1 and 2 only: accuracy 0.5.
    rule = BatchAdaptiveBeta(alpha=0.6, keep_fraction=1.0)
    loss, metrics = BetaDPOLoss(beta=0.1, rule=rule).train()(_pairs(*LOGPS))
    assert_close(metrics["beta/used"], torch.tensor(0.154))
    assert_close(loss, dpo_loss(*LOGPS, beta=0.154).losses.mean())
    assert_close(metrics["rewards/chosen"], torch.tensor(0.0))
    assert_close(metrics["rewards/rejected"], torch.tensor(-0.1))
    assert_close(metrics["rewards/margins"], torch.tensor(0.1))
    assert_close(metrics["rewards/accuracies"], torch.tensor(0.5))


def test_learnable_rule_trains_through_the_loss_and_rewards_keep_beta0():
    # log_scale ln 2: beta 0.1 * 2 = 0.2 in the loss, the rewards' margins stay 0.1 * mean(M) = 0.1
    loss = BetaDPOLoss(beta=0.1, rule=LearnableBeta())
    assert [name for name, _ in loss.named_parameters()] == ["rule.log_scale"]
    with torch.no_grad():
        loss.rule.log_scale.fill_(math.log(2))
    value, metrics = loss(_pairs(*LOGPS))
    assert_close(value, dpo_loss(*LOGPS, beta=0.2).losses.mean())
    assert_close(metrics["beta/used"], torch.tensor(0.2))
    assert_close(metrics["rewards/margins"], torch.tensor(0.1))
    value.backward()
    assert loss.rule.log_scale.grad is not None and loss.rule.log_scale.grad != 0


def test_gather_is_handed_to_the_rule():
    # One rank: gather returns its input, so the statistics are those without gather (mean 0.1); the rule
    # gathers the margins [3, 2, 0, -1] for the statistics, then its keep mask (floor(4 * 0.8) = 3 pairs) for beta.
    calls = []

    def gather(tensor):
        calls.append(tensor.clone())
        return tensor

    loss = BetaDPOLoss(beta=0.1).train()
    loss.gather = gather
    loss(_pairs(*LOGPS))
    assert len(calls) == 2
    assert_close(calls[0], MARGINS)
    assert calls[1].shape == (4,) and calls[1].sum().item() == 3
    assert_close(loss.rule.margin_mean, torch.tensor(0.1))


def test_bad_beta_dpo_arguments_are_named():
    for beta in (0.0, -0.1):
        with pytest.raises(ValueError, match="beta"):
            BetaDPOLoss(beta=beta, rule=FixedBeta())  # beta0 is the loss's; the rules receive it
    with pytest.raises(ValueError, match="label_smoothing"):
        BetaDPOLoss(label_smoothing=0.5)
