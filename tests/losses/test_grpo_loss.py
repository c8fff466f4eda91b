"""GRPO losses against values computed by hand: advantages, the per-token pieces, each aggregation, `GRPOLoss`.

The running example (eps 0.2, so the ratio is clipped outside [0.8, 1.2]): two completions, advantages [2, -1],
masks [1, 1, 1] and [1, 1, 0], ratios r = exp(logps - old_logps):
    row 0 (A = 2):  r = [1, 1.5, 0.5] -> -min(r A, clip(r) A) = [-min(2, 2), -min(3, 2.4), -min(1, 1.6)]
                                      = [-2, -2.4, -1]
    row 1 (A = -1): r = [1, 0.5, 3*]  -> [-min(-1, -1), -min(-0.5, -0.8)] = [1, 0.8]; * is padding
Token 1 of row 0 is clipped high, token 1 of row 1 clipped low; row 0's token 2 (r = 0.5 with A > 0) is not:
the min keeps the unclipped term. Sums: row 0 -5.4 over 3 tokens, row 1 1.8 over 2, total -3.6 over 5 tokens.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.checks import ConfigError
from lit_align.losses import (
    GRPOLoss,
    RolloutLogps,
    aggregate_tokens,
    clip_fractions,
    clipped_surrogate,
    group_advantages,
    k3_kl,
)

RATIOS = torch.tensor([[1.0, 1.5, 0.5], [1.0, 0.5, 3.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
ADVANTAGES = torch.tensor([2.0, -1.0])
OLD_LOGPS = torch.zeros(2, 3)
EXPECTED_PER_TOKEN = torch.tensor([[-2.0, -2.4, -1.0], [1.0, 0.8, 3.0]])  # padding: -min(-3, -1.2) = 3, masked

# Group-scaled advantage of a reward 0.5 away from its group's mean with std sqrt(1/3) (see the first test).
A_GROUP = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # 0.865875


def _logps() -> torch.Tensor:
    return RATIOS.log().requires_grad_()


def _inputs(logps: torch.Tensor, **kwargs) -> RolloutLogps:
    defaults = dict(mask=MASK, advantages=ADVANTAGES, max_completion_length=6, old_logps=OLD_LOGPS)
    return RolloutLogps(logps=logps, **{**defaults, **kwargs})


# --- advantages ---------------------------------------------------------------------------------------------------

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
SPREAD_GROUP = torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # sign of r - mean; second group all 0


def test_group_scaling_by_hand():
    # group 1: mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.57735 -> A = ±0.5 / 0.57745 = ±0.86588
    # group 2: all rewards 1, zero spread -> A = 0 exactly, flagged
    advantages, zero_std = group_advantages(REWARDS, group_size=4)
    assert_close(advantages, SPREAD_GROUP * A_GROUP)
    assert_close(advantages[:4].abs(), torch.full((4,), 0.86588), atol=1e-5, rtol=0)
    assert zero_std.tolist() == [False] * 4 + [True] * 4
    assert (advantages[4:] == 0).all()


def test_no_scaling_is_reward_minus_group_mean():
    advantages, zero_std = group_advantages(REWARDS, group_size=4, scale_rewards="none")
    assert_close(advantages, SPREAD_GROUP * 0.5)
    assert zero_std.tolist() == [False] * 4 + [True] * 4


def test_batch_scaling_by_hand_on_one_rank():
    # batch of 8: mean 0.75; squares 6 * 0.25^2 + 2 * 0.75^2 = 1.5; std sqrt(1.5 / 7) = 0.46291
    # A = ±0.5 / 0.46301 = ±1.07989 in group 1; group 2 still 0 (its own rewards do not differ)
    advantages, zero_std = group_advantages(REWARDS, group_size=4, scale_rewards="batch")
    assert_close(advantages, SPREAD_GROUP * 0.5 / (math.sqrt(1.5 / 7) + 1e-4))
    assert zero_std.tolist() == [False] * 4 + [True] * 4


def test_batch_scaling_uses_every_rank_through_gather():
    # Two ranks holding the same rewards: 16 values, squares 3.0, std sqrt(3 / 15) = sqrt(0.2) = 0.44721,
    # A = ±0.5 / 0.44731 = ±1.11778 (on one rank it would be ±1.07989).
    seen = []

    def two_ranks(tensor):
        seen.append(tensor.shape)
        return torch.cat([tensor, tensor])

    advantages, _ = group_advantages(REWARDS, group_size=4, scale_rewards="batch", gather=two_ranks)
    assert_close(advantages, SPREAD_GROUP * 0.5 / (math.sqrt(0.2) + 1e-4))
    assert_close(advantages[0], torch.tensor(1.11778), atol=1e-5, rtol=0)
    assert seen == [torch.Size([8])]


def test_unscorable_rewards_are_left_out_of_mean_and_std():
    # group [1, NaN, 0, 0]: mean over 3 scored = 1/3; squares (2/3)^2 + 2 (1/3)^2 = 2/3, std sqrt((2/3) / 2)
    # = sqrt(1/3). A = [2/3, 0, -1/3, -1/3] / 0.57745 = [1.15450, 0, -0.57725, -0.57725].
    # group [NaN, 1, NaN, NaN]: one scored value, no spread -> all 0, flagged. group of all NaN: the same.
    nan = float("nan")
    rewards = torch.tensor([1.0, nan, 0.0, 0.0, nan, 1.0, nan, nan, nan, nan, nan, nan])
    advantages, zero_std = group_advantages(rewards, group_size=4)
    expected = torch.tensor([2 / 3, 0.0, -1 / 3, -1 / 3] + [0.0] * 8) / (math.sqrt(1 / 3) + 1e-4)
    assert_close(advantages, expected)
    assert zero_std.tolist() == [False] * 4 + [True] * 8
    none, _ = group_advantages(rewards, group_size=4, scale_rewards="none")
    assert_close(none[:4], torch.tensor([2 / 3, 0.0, -1 / 3, -1 / 3]))


def test_zero_spread_is_exactly_zero_even_when_the_mean_is_inexact():
    # 0.9 three times: float32's mean is 6e-8 off 0.9, which the std would scale to about 6e-4; it must stay 0.
    rewards = torch.full((3,), 0.9)
    assert (rewards - rewards.mean() != 0).all()
    advantages, zero_std = group_advantages(rewards, group_size=3)
    assert (advantages == 0).all() and zero_std.all()


def test_reward_never_earned_gives_no_gradient():
    advantages, zero_std = group_advantages(torch.zeros(8), group_size=4)
    assert (advantages == 0).all() and zero_std.all()
    logps = torch.randn(8, 5, requires_grad=True)
    out = GRPOLoss()(RolloutLogps(logps, torch.ones(8, 5), advantages, max_completion_length=5))
    out.loss.backward()
    assert out.loss.item() == 0 and (logps.grad == 0).all()


def test_advantage_arguments_are_checked():
    with pytest.raises(ValueError, match="scale_rewards must be one of group, batch, none, got 'std'"):
        group_advantages(REWARDS, group_size=4, scale_rewards="std")
    with pytest.raises(ValueError, match="divisible by group_size=3"):
        group_advantages(REWARDS, group_size=3)


# --- per-token pieces ---------------------------------------------------------------------------------------------


def test_k3_by_hand():
    logps = torch.tensor([-1.0, -2.0, -0.5])
    assert_close(k3_kl(logps, logps), torch.zeros(3))
    # ref - logp = 1: e - 1 - 1 = e - 2 = 0.71828; ref - logp = -1: 1/e + 1 - 1 = 0.36788
    assert_close(k3_kl(logps, logps + 1), torch.full((3,), math.e - 2))
    assert_close(k3_kl(logps, logps - 1), torch.full((3,), math.exp(-1)))


def test_clipped_surrogate_by_hand():
    per_token, ratio = clipped_surrogate(_logps(), OLD_LOGPS, ADVANTAGES, 0.2, 0.2)
    assert_close(ratio.detach(), RATIOS)
    assert_close(per_token.detach(), EXPECTED_PER_TOKEN)


def test_clip_fractions_by_hand():
    # 5 tokens: one clipped high (r 1.5, A 2), one clipped low (r 0.5, A -1); r 0.5 with A 2 is not "low".
    fractions = clip_fractions(RATIOS, ADVANTAGES, MASK, 0.2, 0.2)
    assert_close(fractions["clip_ratio/low_mean"], torch.tensor(0.2))
    assert_close(fractions["clip_ratio/high_mean"], torch.tensor(0.2))
    assert_close(fractions["clip_ratio/region_mean"], torch.tensor(0.4))
    # epsilon_high 0.6: r 1.5 is inside [0.8, 1.6], so nothing is clipped high
    assert_close(clip_fractions(RATIOS, ADVANTAGES, MASK, 0.2, 0.6)["clip_ratio/high_mean"], torch.tensor(0.0))


def test_clip_fractions_count_every_rank_token():
    # second rank: 3 tokens, none clipped. Low: 1 of 8 tokens = 0.125; region 2 / 8 = 0.25.
    def two_ranks(totals):
        return torch.cat([totals, torch.tensor([0.0, 0.0, 0.0, 3.0])])

    fractions = clip_fractions(RATIOS, ADVANTAGES, MASK, 0.2, 0.2, gather=two_ranks)
    assert_close(fractions["clip_ratio/low_mean"], torch.tensor(0.125))
    assert_close(fractions["clip_ratio/region_mean"], torch.tensor(0.25))


# --- aggregation and the loss object ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss_type, num_items, expected",
    [
        ("grpo", 1.0, (-5.4 / 3 + 1.8 / 2) / 2),  # -0.45: mean of the per-completion means
        ("bnpo", 1.0, -3.6 / 5),  # -0.72: mean over the 5 tokens
        ("dr_grpo", 1.0, -3.6 / (2 * 6)),  # -0.3: over N * max_completion_length
        ("dapo", 4.0, -3.6 / 4),  # -0.9: over the tokens of the global batch per rank
        ("dapo", torch.tensor(4.0), -3.6 / 4),
    ],
)
def test_each_aggregation_by_hand(loss_type, num_items, expected):
    loss = aggregate_tokens(EXPECTED_PER_TOKEN, MASK, loss_type, 6, num_items)
    assert_close(loss, torch.tensor(expected))


@pytest.mark.parametrize("loss_type, expected", [("grpo", -0.45), ("bnpo", -0.72), ("dr_grpo", -0.3), ("dapo", -0.72)])
def test_loss_object_by_hand(loss_type, expected):
    logps = _logps()
    out = GRPOLoss(loss_type=loss_type)(_inputs(logps))
    assert_close(out.loss, torch.tensor(expected))
    assert set(out.metrics) == {"clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"}
    assert_close(out.metrics["clip_ratio/region_mean"], torch.tensor(0.4))


def test_dapo_normalises_by_tokens_of_all_ranks():
    # this rank 5 tokens, the other 15: num_items = 20 / 2 = 10, loss = -3.6 / 10 = -0.36
    loss = GRPOLoss(loss_type="dapo")
    loss.gather = lambda tensor: torch.cat([tensor, 3 * tensor])
    assert_close(loss(_inputs(_logps())).loss, torch.tensor(-0.36))


def test_gradient_is_zero_on_clipped_tokens_only():
    # bnpo divides by 5; d(-r A)/d logp = -r A on unclipped tokens: row 0 [-2, 0, -1] / 5, row 1 [1, 0, 0] / 5
    logps = _logps()
    GRPOLoss(loss_type="bnpo")(_inputs(logps)).loss.backward()
    assert_close(logps.grad, torch.tensor([[-0.4, 0.0, -0.2], [0.2, 0.0, 0.0]]))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_ratio_one_is_reinforce(loss_type):
    # old_logps None: r = 1 and nothing is clipped, so the loss is -(weighted mean of A) and its gradient is that
    # of the REINFORCE surrogate -sum(A * logps * mask) / normaliser.
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    advantages = torch.tensor([1.5, -0.5, -0.5])
    logps = torch.randn(3, 4, requires_grad=True)
    out = GRPOLoss(loss_type=loss_type)(RolloutLogps(logps, mask, advantages, max_completion_length=5))
    out.loss.backward()

    reference_logps = logps.detach().clone().requires_grad_()
    lengths = mask.sum(-1)  # [3, 2, 4]
    weighted = advantages[:, None] * reference_logps * mask
    if loss_type == "grpo":
        surrogate, value = -(weighted.sum(-1) / lengths).mean(), -advantages.mean()  # -0.5 / 3
    elif loss_type == "dr_grpo":
        surrogate, value = -weighted.sum() / 15, -(advantages * lengths).sum() / 15  # -(4.5 - 1 - 2) / 15 = -0.1
    else:
        surrogate, value = -weighted.sum() / 9, -(advantages * lengths).sum() / 9  # -1.5 / 9
    surrogate.backward()
    assert_close(out.loss, value)
    assert_close(logps.grad, reference_logps.grad)
    assert out.metrics["clip_ratio/region_mean"] == 0


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_masked_row_has_no_gradient_and_leaves_other_rows_alone(loss_type):
    # A truncated completion masked out: its row gets no gradient. bnpo and dapo count tokens, so the loss equals
    # the loss without that row; grpo and dr_grpo count completions (N = 3 instead of 2), as TRL does, so the rest
    # is scaled by 2/3.
    logps = _logps()
    with_row = torch.cat([logps, torch.full((1, 3), -0.3)]).detach().requires_grad_()
    mask = torch.cat([MASK, torch.zeros(1, 3, dtype=MASK.dtype)])
    kwargs = dict(advantages=torch.tensor([2.0, -1.0, 5.0]), old_logps=torch.zeros(3, 3))
    padded = GRPOLoss(loss_type=loss_type)(_inputs(with_row, mask=mask, **kwargs)).loss
    plain = GRPOLoss(loss_type=loss_type)(_inputs(logps)).loss
    padded.backward()
    plain.backward()
    scale = 2 / 3 if loss_type in ("grpo", "dr_grpo") else 1.0
    assert_close(padded, plain * scale)
    assert (with_row.grad[2] == 0).all()
    assert_close(with_row.grad[:2], logps.grad * scale)


def test_kl_penalty_by_hand():
    # Policy 0 everywhere, reference [[0, 1, 1*], [1, 0, 5*]]: k3 = [[0, e-2], [e-2, 0]] on the 4 tokens used.
    # A = 0 and r = 1, so the loss is beta * k3 only: bnpo 0.1 * 2(e-2) / 4 = 0.035914; kl = (e-2) / 2 = 0.35914.
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    ref = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 5.0]])
    logps = torch.zeros(2, 3, requires_grad=True)
    inputs = RolloutLogps(logps, mask, torch.zeros(2), max_completion_length=3, ref_logps=ref)
    out = GRPOLoss(loss_type="bnpo", beta=0.1, use_bias_correction_kl=False)(inputs)
    assert_close(out.metrics["kl"], torch.tensor((math.e - 2) / 2))
    assert_close(out.loss, torch.tensor(0.1 * (math.e - 2) / 2))
    # d k3 / d logp = 1 - exp(ref - logp): at ref - logp = 1 that is 1 - e; times 0.1 / 4
    out.loss.backward()
    assert_close(logps.grad, torch.tensor([[0.0, 1 - math.e, 0.0], [1 - math.e, 0.0, 0.0]]) * 0.1 / 4)


def test_kl_bias_correction_changes_the_gradient_but_not_the_value_on_policy():
    # TRL 1.16's default: beta * r * k3 with r = exp(logp - old) = 1 here (old = logp, detached). The value is the
    # same as above; the gradient gains k3 * dr/dlogp = k3: at ref - logp = 1, (e - 2) + (1 - e) = -1.
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    ref = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 5.0]])
    logps = torch.zeros(2, 3, requires_grad=True)
    inputs = RolloutLogps(logps, mask, torch.zeros(2), max_completion_length=3, ref_logps=ref)
    out = GRPOLoss(loss_type="bnpo", beta=0.1)(inputs)
    assert_close(out.loss, torch.tensor(0.1 * (math.e - 2) / 2))
    assert_close(out.metrics["kl"], torch.tensor((math.e - 2) / 2))
    out.loss.backward()
    assert_close(logps.grad, torch.tensor([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]]) * 0.1 / 4)


def test_kl_needs_the_reference():
    assert GRPOLoss().reference_free and not GRPOLoss(beta=0.04).reference_free
    with pytest.raises(ValueError, match=r"beta=0.04 .* no ref_logps.*loss.init_args.beta: 0"):
        GRPOLoss(beta=0.04)(_inputs(_logps()))


def test_epsilon_high_defaults_to_epsilon():
    assert GRPOLoss(epsilon=0.3).epsilon_high == 0.3
    assert GRPOLoss(epsilon=0.2, epsilon_high=0.28).epsilon_high == 0.28


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss_type="ppo"), r"model.init_args.loss.init_args.loss_type must be one of grpo, bnpo, dr_grpo, dapo"),
        (dict(epsilon=0.0), r"model.init_args.loss.init_args.epsilon must be in \(0, 1\), got 0.0"),
        (dict(epsilon=1.5), r"model.init_args.loss.init_args.epsilon must be in \(0, 1\), got 1.5"),
        (dict(epsilon_high=-0.1), r"model.init_args.loss.init_args.epsilon_high must be a finite number >= 0"),
        (dict(beta=-1.0), r"model.init_args.loss.init_args.beta must be a finite number >= 0, got -1.0"),
        (dict(beta=float("nan")), r"model.init_args.loss.init_args.beta must be a finite number >= 0, got nan"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GRPOLoss(**kwargs)
