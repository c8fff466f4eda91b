"""DPO losses against values computed by hand: the formula `dpo_loss`, then the `DPOLoss` object.

The running example: beta = 0.5, policy log-probs chosen -1 and rejected -3, reference -2 and -2.
h = (-1 - (-2)) - (-3 - (-2)) = 1 - (-1) = 2 and beta * h = 1.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import DPOLoss, PreferenceLogps, dpo_loss, preference_metrics

POLICY_CHOSEN, POLICY_REJECTED = torch.tensor([-1.0]), torch.tensor([-3.0])
REF_CHOSEN, REF_REJECTED = torch.tensor([-2.0]), torch.tensor([-2.0])


def _loss(**kwargs):
    return dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, **kwargs)


def test_sigmoid_by_hand():
    # -logsigmoid(1) = log(1 + e^-1) = 0.313262
    out = _loss(beta=0.5)
    assert_close(out.losses, torch.tensor([math.log(1 + math.exp(-1))]))
    assert_close(out.losses, torch.tensor([0.313262]), atol=1e-6, rtol=0)
    # rewards: 0.5 * (-1 + 2) = 0.5 and 0.5 * (-3 + 2) = -0.5
    assert_close(out.chosen_rewards, torch.tensor([0.5]))
    assert_close(out.rejected_rewards, torch.tensor([-0.5]))


def test_sigmoid_label_smoothing_by_hand():
    # 0.9 * log(1 + e^-1) + 0.1 * log(1 + e^1) = 0.9 * 0.313262 + 0.1 * 1.313262 = 0.413262
    out = _loss(beta=0.5, label_smoothing=0.1)
    assert_close(out.losses, torch.tensor([0.413262]), atol=1e-6, rtol=0)


def test_ipo_by_hand():
    # (h - 1 / (2 beta))^2: beta 0.5 -> (2 - 1)^2 = 1; beta 0.25 -> (2 - 2)^2 = 0; beta 1 -> (2 - 0.5)^2 = 2.25
    assert_close(_loss(beta=0.5, loss_type="ipo").losses, torch.tensor([1.0]))
    assert_close(_loss(beta=0.25, loss_type="ipo").losses, torch.tensor([0.0]))
    assert_close(_loss(beta=1.0, loss_type="ipo").losses, torch.tensor([2.25]))


def test_hinge_by_hand():
    # relu(1 - beta * h): beta 0.5 -> 0; beta 0.25 -> 0.5; beta 0.1 -> 0.8
    assert_close(_loss(beta=0.5, loss_type="hinge").losses, torch.tensor([0.0]))
    assert_close(_loss(beta=0.25, loss_type="hinge").losses, torch.tensor([0.5]))
    assert_close(_loss(beta=0.1, loss_type="hinge").losses, torch.tensor([0.8]))


def test_zero_reference_is_reference_free():
    zeros = torch.zeros(1)
    out = dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, zeros, zeros, beta=0.5)
    # beta * (chosen - rejected) = 0.5 * 2 = 1
    assert_close(out.losses, -torch.nn.functional.logsigmoid(torch.tensor([1.0])))


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([-1.0, -4.0], requires_grad=True)
    rejected = torch.tensor([-3.0, -2.0], requires_grad=True)
    for loss_type in ("sigmoid", "ipo", "hinge"):
        chosen.grad = rejected.grad = None
        dpo_loss(chosen, rejected, torch.full((2,), -2.0), torch.full((2,), -2.0), beta=0.1, loss_type=loss_type)[
            0
        ].sum().backward()
        assert (chosen.grad < 0).all() and (rejected.grad > 0).all(), loss_type


def test_policy_equal_to_reference_gives_log2_and_zero_rewards():
    logps = torch.tensor([-5.0, -7.0])
    out = dpo_loss(logps, logps + 1, logps, logps + 1, beta=0.3)
    assert_close(out.losses, torch.full((2,), math.log(2)))
    assert (out.chosen_rewards == 0).all() and (out.rejected_rewards == 0).all()


def test_metrics_use_trl_names_and_values():
    chosen_rewards = torch.tensor([0.5, -0.2, 0.1])
    rejected_rewards = torch.tensor([-0.5, 0.3, 0.1])
    metrics = preference_metrics(
        chosen_rewards, rejected_rewards, torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-4.0, -5.0, -6.0])
    )
    assert_close(metrics["rewards/chosen"], torch.tensor(0.4 / 3))
    assert_close(metrics["rewards/rejected"], torch.tensor(-0.1 / 3))
    # pair 1 wins, pair 2 loses, pair 3 ties (a tie is not a win): 1/3
    assert_close(metrics["rewards/accuracies"], torch.tensor(1 / 3))
    # margins 1.0, -0.5, 0.0 -> 0.5 / 3
    assert_close(metrics["rewards/margins"], torch.tensor(0.5 / 3))
    assert_close(metrics["logps/chosen"], torch.tensor(-2.0))
    assert_close(metrics["logps/rejected"], torch.tensor(-5.0))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="loss_type"):
        _loss(loss_type="nope")
    with pytest.raises(ValueError, match="label_smoothing"):
        _loss(label_smoothing=0.5)


def test_robust_by_hand():
    """With A = -logsigmoid(z) and B = -logsigmoid(-z) = A + z, the robust loss
    ((1 - eps) A - eps B) / (1 - 2 eps) simplifies to A - eps z / (1 - 2 eps).

    beta 0.5, h 2 -> z = 1, eps 0.1: 0.313262 - 0.1 / 0.8 = 0.313262 - 0.125 = 0.188262.
    """
    out = _loss(beta=0.5, loss_type="robust", label_smoothing=0.1)
    assert_close(out.losses, torch.tensor([0.188262]), atol=1e-6, rtol=0)
    # Rewards are DPO's: 0.5 and -0.5
    assert_close(out.chosen_rewards, torch.tensor([0.5]))
    assert_close(out.rejected_rewards, torch.tensor([-0.5]))


def test_robust_is_unbiased_under_label_flips_and_sigmoid_without_noise():
    # Chowdhury et al.: flipping a pair (h -> -h) with probability eps, the expected robust loss is the clean loss.
    chosen, rejected, zeros = torch.tensor([-1.0, -4.0, -2.0]), torch.tensor([-3.0, -2.0, -2.5]), torch.zeros(3)
    eps = 0.2
    kept = dpo_loss(chosen, rejected, zeros, zeros, beta=0.7, loss_type="robust", label_smoothing=eps).losses
    flipped = dpo_loss(rejected, chosen, zeros, zeros, beta=0.7, loss_type="robust", label_smoothing=eps).losses
    clean = dpo_loss(chosen, rejected, zeros, zeros, beta=0.7).losses
    assert_close((1 - eps) * kept + eps * flipped, clean)
    assert_close(dpo_loss(chosen, rejected, zeros, zeros, beta=0.7, loss_type="robust").losses, clean)


def test_simpo_by_hand_and_reference_free():
    # Averaged log-probs -1 and -3, beta 0.5, gamma 0.5: z = 0.5 * 2 - 0.5 = 0.5, loss = log(1 + e^-0.5) = 0.474077
    out = _loss(beta=0.5, loss_type="simpo", simpo_gamma=0.5)
    assert_close(out.losses, torch.tensor([0.474077]), atol=1e-6, rtol=0)
    # Rewards beta * policy: 0.5 * -1 = -0.5 and 0.5 * -3 = -1.5
    assert_close(out.chosen_rewards, torch.tensor([-0.5]))
    assert_close(out.rejected_rewards, torch.tensor([-1.5]))
    # beta 2, gamma 1 (gamma_beta_ratio 0.5): z = 2 * 2 - 1 = 3, loss = log(1 + e^-3) = 0.048587
    assert_close(
        _loss(beta=2.0, loss_type="simpo", simpo_gamma=1.0).losses, torch.tensor([0.048587]), atol=1e-6, rtol=0
    )
    # Whatever the reference says, SimPO does not read it.
    other = dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, torch.tensor([5.0]), torch.tensor([-9.0]), 0.5, "simpo")
    assert_close(other.losses, out.losses)


def test_length_penalty_by_hand():
    # R-DPO: z = beta * h + alpha * (|y_w| - |y_l|); beta * h = 1, alpha 0.02.
    # chosen 30 tokens, rejected 80: z = 1 + 0.02 * (-50) = 0 -> log 2 = 0.693147 (a short chosen must win on quality)
    # chosen 80 tokens, rejected 30: z = 1 + 0.02 * 50 = 2 -> log(1 + e^-2) = 0.126928 (length already explains it)
    short, long = torch.tensor([30]), torch.tensor([80])
    out = _loss(beta=0.5, length_penalty=0.02, chosen_lengths=short, rejected_lengths=long)
    assert_close(out.losses, torch.tensor([math.log(2)]))
    out = _loss(beta=0.5, length_penalty=0.02, chosen_lengths=long, rejected_lengths=short)
    assert_close(out.losses, torch.tensor([0.126928]), atol=1e-6, rtol=0)
    assert_close(out.chosen_rewards, torch.tensor([0.5]))  # the length term is not part of the rewards
    # hinge: relu(1 - z) = relu(1 - 0) = 1 and relu(1 - 2) = 0
    hinge = {"beta": 0.5, "loss_type": "hinge", "length_penalty": 0.02}
    assert_close(_loss(**hinge, chosen_lengths=short, rejected_lengths=long).losses, torch.tensor([1.0]))
    assert_close(_loss(**hinge, chosen_lengths=long, rejected_lengths=short).losses, torch.tensor([0.0]))


def test_rpo_adds_the_weighted_chosen_nll():
    # sigmoid 0.313262 + 1.0 * 0.7 = 1.013262; with alpha 0.5 and NLL 2: 0.313262 + 1 = 1.313262
    assert_close(_loss(beta=0.5, rpo_alpha=1.0, chosen_nll=torch.tensor([0.7])).losses, torch.tensor([1.013262]))
    assert_close(_loss(beta=0.5, rpo_alpha=0.5, chosen_nll=torch.tensor([2.0])).losses, torch.tensor([1.313262]))
    assert_close(_loss(beta=0.5, chosen_nll=torch.tensor([2.0])).losses, _loss(beta=0.5).losses)  # alpha 0: off


def test_new_variants_push_chosen_up_and_rejected_down():
    reference = torch.full((2,), -2.0)
    cases = [
        {"loss_type": "robust", "label_smoothing": 0.2},
        {"loss_type": "simpo", "simpo_gamma": 0.5},
        {"length_penalty": 0.02, "chosen_lengths": torch.tensor([40, 10]), "rejected_lengths": torch.tensor([10, 40])},
    ]
    for kwargs in cases:
        chosen = torch.tensor([-1.0, -4.0], requires_grad=True)
        rejected = torch.tensor([-3.0, -2.0], requires_grad=True)
        dpo_loss(chosen, rejected, reference, reference, beta=0.1, **kwargs).losses.sum().backward()
        assert (chosen.grad < 0).all() and (rejected.grad > 0).all(), kwargs
    chosen = torch.tensor([-1.0, -4.0], requires_grad=True)
    out = dpo_loss(chosen, torch.tensor([-3.0, -2.0]), reference, reference, rpo_alpha=1.0, chosen_nll=-chosen / 10)
    out.losses.sum().backward()
    assert (chosen.grad < 0).all()


def test_variant_arguments_are_checked():
    with pytest.raises(ValueError, match="chosen_lengths"):
        _loss(length_penalty=0.02)
    with pytest.raises(ValueError, match="ipo"):
        _loss(
            loss_type="ipo", length_penalty=0.02, chosen_lengths=torch.tensor([1]), rejected_lengths=torch.tensor([2])
        )
    with pytest.raises(ValueError, match="chosen_nll"):
        _loss(rpo_alpha=1.0)


# ---- the loss object ------------------------------------------------------------------------------------

LOSS_TYPES = ["sigmoid", "robust", "ipo", "hinge", "simpo"]


def _pairs(chosen_tokens: int = 1, rejected_tokens: int = 1) -> PreferenceLogps:
    """The running example as per-token averages: the sums the module passes are the values times the tokens."""
    c, r = torch.tensor([chosen_tokens]), torch.tensor([rejected_tokens])
    return PreferenceLogps(POLICY_CHOSEN * c, POLICY_REJECTED * r, REF_CHOSEN * c, REF_REJECTED * r, c, r)


def _random_pairs(n: int = 8, seed: int = 0) -> PreferenceLogps:
    generator = torch.Generator().manual_seed(seed)
    c, r = torch.randint(1, 40, (2, n), generator=generator)
    per_token = -0.2 - 2 * torch.rand(4, n, generator=generator)
    return PreferenceLogps(per_token[0] * c, per_token[1] * r, per_token[2] * c, per_token[3] * r, c, r)


def _formula_inputs(logps: PreferenceLogps, loss_type: str) -> list[torch.Tensor]:
    """The four log-probs dpo_loss should see: sums, or per-token averages for ipo and simpo."""
    c, r = (logps.chosen_tokens, logps.rejected_tokens) if loss_type in ("ipo", "simpo") else (1, 1)
    return [
        logps.policy_chosen / c,
        logps.policy_rejected / r,
        logps.reference_chosen / c,
        logps.reference_rejected / r,
    ]


def test_dpo_loss_object_by_hand():
    # The docstring's example: loss log(1 + e^-1) = 0.313262, rewards 0.5 and -0.5, the chosen one wins.
    loss, metrics = DPOLoss(beta=0.5)(_pairs())
    assert_close(loss, torch.tensor(0.313262), atol=1e-6, rtol=0)
    expected = {"rewards/chosen": 0.5, "rewards/rejected": -0.5, "rewards/accuracies": 1.0, "rewards/margins": 1.0}
    expected |= {"logps/chosen": -1.0, "logps/rejected": -3.0}
    assert set(metrics) == set(expected)  # no nll_loss without rpo_alpha
    for name, value in expected.items():
        assert_close(metrics[name], torch.tensor(value), msg=name)


def test_dpo_loss_object_averages_over_tokens_for_ipo_and_simpo():
    # 2 chosen and 4 rejected tokens: sums -2, -12 (policy) and -4, -8 (reference) average to the running example.
    # ipo, beta 0.5: (2 - 1)^2 = 1 (on the sums h = 2 - (-4) = 6 would give 25); simpo, beta 0.5, gamma 0.5:
    # log(1 + e^-0.5) = 0.474077, rewards 0.5 * -1 and 0.5 * -3; sigmoid reads the sums: -logsigmoid(0.5 * 6).
    assert_close(DPOLoss(beta=0.5, loss_type="ipo")(_pairs(2, 4)).loss, torch.tensor(1.0))
    loss, metrics = DPOLoss(beta=0.5, loss_type="simpo", simpo_gamma=0.5)(_pairs(2, 4))
    assert_close(loss, torch.tensor(0.474077), atol=1e-6, rtol=0)
    assert_close(metrics["rewards/chosen"], torch.tensor(-0.5))
    assert_close(metrics["rewards/rejected"], torch.tensor(-1.5))
    assert_close(metrics["logps/chosen"], torch.tensor(-2.0))  # logged log-probs stay sums
    assert_close(DPOLoss(beta=0.5)(_pairs(2, 4)).loss, torch.tensor(math.log(1 + math.exp(-3))))


def test_dpo_loss_object_length_penalty_and_rpo_by_hand():
    # R-DPO reads the token counts: chosen 80, rejected 30, alpha 0.02: z = 1 + 0.02 * 50 = 2 -> 0.126928.
    logps = PreferenceLogps(
        POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, torch.tensor([80]), torch.tensor([30])
    )
    assert_close(DPOLoss(beta=0.5, length_penalty=0.02)(logps).loss, torch.tensor(0.126928), atol=1e-6, rtol=0)
    # RPO: chosen sum -1 over 4 tokens, NLL 1 / 4 = 0.25; loss 0.313262 + 1.0 * 0.25 = 0.563262
    logps = PreferenceLogps(
        POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, torch.tensor([4]), torch.tensor([2])
    )
    loss, metrics = DPOLoss(beta=0.5, rpo_alpha=1.0)(logps)
    assert_close(loss, torch.tensor(0.563262), atol=1e-6, rtol=0)
    assert_close(metrics["nll_loss"], torch.tensor(0.25))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dpo_loss_object_evaluates_dpo_loss(loss_type):
    """Per pair, DPOLoss is dpo_loss on the sums, or on sums / tokens for ipo and simpo; the loss is their mean."""
    logps = _random_pairs()
    options = {"beta": 0.2, "loss_type": loss_type, "label_smoothing": 0.1, "simpo_gamma": 0.3}
    expected = dpo_loss(*_formula_inputs(logps, loss_type), **options)
    loss, metrics = DPOLoss(**options)(logps)
    assert_close(loss, expected.losses.mean())
    assert_close(metrics["rewards/chosen"], expected.chosen_rewards.mean())
    assert_close(metrics["rewards/rejected"], expected.rejected_rewards.mean())
    assert_close(metrics["rewards/margins"], (expected.chosen_rewards - expected.rejected_rewards).mean())
    assert_close(metrics["logps/chosen"], logps.policy_chosen.mean())


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_dpo_loss_object_with_length_penalty_and_rpo(loss_type):
    """R-DPO's lengths are the token counts; RPO's NLL is -policy_chosen / chosen_tokens, logged as nll_loss."""
    logps = _random_pairs()
    c, r = logps.chosen_tokens, logps.rejected_tokens
    nll = -logps.policy_chosen / c
    length_penalty = 0.0 if loss_type == "ipo" else 0.01  # ipo has no margin to shift
    options = {"beta": 0.2, "loss_type": loss_type, "length_penalty": length_penalty, "rpo_alpha": 0.5}
    expected = dpo_loss(
        *_formula_inputs(logps, loss_type), **options, chosen_lengths=c, rejected_lengths=r, chosen_nll=nll
    )
    loss, metrics = DPOLoss(**options)(logps)
    assert_close(loss, expected.losses.mean())
    assert_close(metrics["nll_loss"], nll.mean())


def test_dpo_loss_object_bad_arguments_raise_at_construction():
    with pytest.raises(ValueError, match="loss_type"):
        DPOLoss(loss_type="nope")
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOLoss(label_smoothing=0.5)
    with pytest.raises(ValueError, match="ipo"):
        DPOLoss(loss_type="ipo", length_penalty=0.02)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_per_pair_beta_equals_separate_scalar_calls(loss_type):
    # Three pairs with h = 2, 1, -1 and beta = 0.5, 0.25, 1: e.g. ipo pair 2 is (1 - 1 / 0.5)^2 = 1, sigmoid pair 1
    # is -logsigmoid(0.5 * 2) = 0.313262, as in test_sigmoid_by_hand.
    policy_chosen, policy_rejected = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-3.0, -3.0, -2.0])
    reference = torch.tensor([-2.0, -2.0, -2.0])
    betas = torch.tensor([0.5, 0.25, 1.0])
    together = dpo_loss(policy_chosen, policy_rejected, reference, reference, beta=betas, loss_type=loss_type)
    for i, beta in enumerate(betas.tolist()):
        pair = (policy_chosen[i : i + 1], policy_rejected[i : i + 1], reference[i : i + 1], reference[i : i + 1])
        alone = dpo_loss(*pair, beta=beta, loss_type=loss_type)
        assert_close(together.losses[i : i + 1], alone.losses)
        assert_close(together.chosen_rewards[i : i + 1], alone.chosen_rewards)
        assert_close(together.rejected_rewards[i : i + 1], alone.rejected_rewards)
    if loss_type == "ipo":
        assert_close(together.losses[1], torch.tensor(1.0))
    else:
        assert_close(together.losses[0], torch.tensor(0.313262), atol=1e-6, rtol=0)
