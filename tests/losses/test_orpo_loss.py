"""ORPO against values computed by hand (the formula `orpo_loss`, then the `ORPOLoss` object), and
log(1 - exp(x)) against a float64 reference.

The running example: lam = 0.2, chosen NLL 1.5, average log-probs lc = ln 0.5 and lr = ln 0.25.
Odds: 0.5 / (1 - 0.5) = 1 and 0.25 / (1 - 0.25) = 1/3, so log_odds = ln 1 - ln(1/3) = ln 3 = 1.098612.
logsigmoid(ln 3) = ln(3 / (3 + 1)) = ln 0.75 = -0.287682.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import ORPOLoss, PreferenceLogps, orpo_loss
from lit_align.losses.orpo import log1mexp

CHOSEN, REJECTED = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
NLL = torch.tensor([1.5])


def test_orpo_by_hand():
    out = orpo_loss(CHOSEN, REJECTED, NLL, lam=0.2)
    # loss = 1.5 - 0.2 * ln 0.75 = 1.5 + 0.2 * 0.287682 = 1.557536
    assert_close(out.losses, torch.tensor([1.5 + 0.2 * math.log(4 / 3)]))
    assert_close(out.losses, torch.tensor([1.557536]), atol=1e-6, rtol=0)
    assert_close(out.log_odds_chosen, torch.tensor([math.log(3)]))
    assert_close(out.log_odds_ratio, torch.tensor([math.log(0.75)]))
    # rewards: 0.2 ln 0.5 = -0.138629 and 0.2 ln 0.25 = -0.277259
    assert_close(out.chosen_rewards, torch.tensor([-0.138629]), atol=1e-6, rtol=0)
    assert_close(out.rejected_rewards, torch.tensor([-0.277259]), atol=1e-6, rtol=0)


def test_equal_log_probs_give_nll_plus_lam_log2():
    # Equal odds: log_odds = 0 and -logsigmoid(0) = ln 2, whatever the log-prob.
    logps = torch.tensor([-0.1, -2.0, -30.0])
    nll = torch.tensor([0.3, 1.0, 2.0])
    out = orpo_loss(logps, logps, nll, lam=0.1)
    assert_close(out.losses, nll + 0.1 * math.log(2))
    assert_close(out.log_odds_chosen, torch.zeros(3))


def test_lam_zero_is_the_nll():
    out = orpo_loss(CHOSEN, REJECTED, NLL, lam=0.0)
    assert_close(out.losses, NLL)


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor([-1.0, -4.0, -0.01], requires_grad=True)
    rejected = torch.tensor([-3.0, -2.0, -0.02], requires_grad=True)
    orpo_loss(chosen, rejected, -chosen, lam=0.2).losses.sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_log_prob_of_exactly_zero_stays_finite():
    # log(1 - e^0) = log 0 = -inf; the floor holds 1 - e^x at the smallest normal float32: ln(1.1755e-38) = -87.34.
    chosen = torch.tensor([0.0], requires_grad=True)
    rejected = torch.tensor([-1.0], requires_grad=True)
    out = orpo_loss(chosen, rejected, -chosen, lam=0.2)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(out.log_odds_chosen).all()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert_close(log1mexp(torch.tensor([0.0])), torch.tensor([math.log(torch.finfo(torch.float32).tiny)]))


@pytest.mark.parametrize("x", [-1e-9, -1e-6, -0.5, -5.0])
def test_log1mexp_is_exact_near_zero_and_its_gradient_too(x):
    """log(1 - e^x) = log(-expm1(x)): at -1e-9 that is ln(1e-9) = -20.7233 (a clamp at -1e-6 gave -13.8155), at
    -1e-6 -13.8155, at -0.5 ln(0.393469) = -0.932752, at -5 ln(0.993262) = -0.00676075. The gradient is
    exp(x) / expm1(x): -1e9, -1e6 (a clamp gave 0), -1.541494, -0.00678351."""
    value = torch.tensor([x], requires_grad=True)
    out = log1mexp(value)
    out.sum().backward()
    assert_close(out.double(), torch.tensor([math.log(-math.expm1(x))], dtype=torch.float64), rtol=1e-6, atol=0)
    gradient = math.exp(x) / math.expm1(x)
    assert_close(value.grad.double(), torch.tensor([gradient], dtype=torch.float64), rtol=1e-5, atol=0)


def test_log1mexp_matches_float64_on_a_grid():
    # Near 0 (where 1 - exp(x) cancels), around -ln 2 (the branch point), and far below (where exp(x) vanishes).
    grid = [-1e-5, -1e-4, -1e-3, -0.01, -0.1, -0.5, -math.log(2) + 1e-4, -math.log(2), -math.log(2) - 1e-4]
    grid += [-1.0, -2.0, -5.0, -10.0, -20.0, -50.0, -100.0, -1000.0]
    expected = torch.tensor([math.log(1 - math.exp(x)) for x in grid], dtype=torch.float64)
    ours = log1mexp(torch.tensor(grid, dtype=torch.float32))
    assert ours.dtype == torch.float32
    assert_close(ours.double(), expected, rtol=1e-5, atol=1e-12)
    # Below about -37 the naive float64 formula itself rounds 1 - e^x to 1 and returns 0 instead of -e^x.
    assert_close(log1mexp(torch.tensor(grid, dtype=torch.float64)), expected, rtol=1e-9, atol=1e-15)


def test_log1mexp_beats_the_naive_formula_in_float32():
    # float32 rounds exp(-1e-8) to 1: the naive formula gives -inf, the stable one ln(1e-8) = -18.4207.
    x = torch.tensor([-1e-8, -5e-6])
    naive = torch.log(1 - torch.exp(x))
    assert torch.isinf(naive[0])
    assert_close(log1mexp(x), torch.tensor([math.log(1e-8), math.log(-math.expm1(-5e-6))]))


# ---- the loss object ------------------------------------------------------------------------------------

TRL_METRICS = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen"}
TRL_METRICS |= {"logps/rejected", "nll_loss", "log_odds_ratio", "log_odds_chosen"}


def _pairs(chosen_sequence_nll: torch.Tensor | None = None) -> PreferenceLogps:
    """The running example as sums: 2 chosen tokens summing to 2 ln 0.5 (average ln 0.5) and 4 rejected tokens
    summing to 4 ln 0.25 (average ln 0.25). ORPO reads no reference: those values are arbitrary."""
    return PreferenceLogps(
        policy_chosen=2 * CHOSEN,
        policy_rejected=4 * REJECTED,
        reference_chosen=torch.tensor([-7.0]),
        reference_rejected=torch.tensor([-1.0]),
        chosen_tokens=torch.tensor([2]),
        rejected_tokens=torch.tensor([4]),
        chosen_sequence_nll=chosen_sequence_nll,
    )


def test_orpo_loss_object_by_hand_with_the_nll_on_prompt():
    # The module's NLL over prompt and answer is 1.5: loss 1.5 + 0.2 * ln(4/3) = 1.557536, as orpo_loss above.
    loss, metrics = ORPOLoss(lam=0.2, nll_on_prompt=True)(_pairs(chosen_sequence_nll=NLL))
    assert_close(loss, torch.tensor(1.557536), atol=1e-6, rtol=0)
    assert set(metrics) == TRL_METRICS
    assert_close(metrics["nll_loss"], torch.tensor(1.5))
    assert_close(metrics["log_odds_ratio"], torch.tensor(math.log(0.75)))
    assert_close(metrics["log_odds_chosen"], torch.tensor(math.log(3)))
    # rewards 0.2 ln 0.5 = -0.138629 and 0.2 ln 0.25 = -0.277259, margin 0.2 ln 2 = 0.138629, chosen wins
    assert_close(metrics["rewards/chosen"], torch.tensor(-0.138629), atol=1e-6, rtol=0)
    assert_close(metrics["rewards/rejected"], torch.tensor(-0.277259), atol=1e-6, rtol=0)
    assert_close(metrics["rewards/margins"], torch.tensor(0.138629), atol=1e-6, rtol=0)
    assert_close(metrics["rewards/accuracies"], torch.tensor(1.0))
    # ORPO logs the per-token averages it works on (ln 0.5, ln 0.25), not the sums (ln 0.25, ln 0.25^4)
    assert_close(metrics["logps/chosen"], CHOSEN[0])
    assert_close(metrics["logps/rejected"], REJECTED[0])


def test_orpo_loss_object_nll_on_the_completion_only():
    # NLL = -(average chosen log-prob) = -ln 0.5 = 0.693147; loss 0.693147 + 0.057536 = 0.750683.
    # A sequence NLL handed in anyway is not read.
    loss, metrics = ORPOLoss(lam=0.2, nll_on_prompt=False)(_pairs(chosen_sequence_nll=NLL))
    assert_close(loss, torch.tensor(0.750683), atol=1e-6, rtol=0)
    assert_close(metrics["nll_loss"], torch.tensor(math.log(2)))
    assert_close(ORPOLoss(lam=0.2, nll_on_prompt=False)(_pairs()).loss, loss)


def test_orpo_loss_object_asks_for_the_sequence_nll_it_reads():
    assert ORPOLoss(nll_on_prompt=True).sequence_nll and not ORPOLoss(nll_on_prompt=False).sequence_nll
    with pytest.raises(ValueError, match="chosen_sequence_nll"):
        ORPOLoss(nll_on_prompt=True)(_pairs())
