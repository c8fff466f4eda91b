"""`FusionBeta` and its operators against values computed by hand.

The running example of the operators: three signals propose β = [0.1, 0.2, 0.4] with weights [0.5, 0.25, 0.25]
(given as [2, 1, 1], normalised). The margins are those of test_beta_rules.py, M = [3, 2, 0, -1].
"""

import math
import threading

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import BetaDPOLoss, PreferenceLogps
from lit_align.losses.beta_fusion import (
    FusionBeta,
    arithmetic_fusion,
    geometric_fusion,
    normalised_weights,
    owa_fusion,
    precision_weights,
    update_moments,
)
from lit_align.losses.beta_rules import (
    BatchAdaptiveBeta,
    BetaDecision,
    BetaRule,
    FixedBeta,
    LearnableBeta,
    MarginBeta,
)

MARGINS = torch.tensor([3.0, 2.0, 0.0, -1.0])
BETAS = torch.tensor([[0.1], [0.2], [0.4]])  # [K = 3 signals, n = 1]
OPERATORS = ["arithmetic", "geometric", "precision", "owa"]


class ScriptedBeta(BetaRule):
    """Returns the next β of a script (a scalar or one per pair) and a fixed keep mask."""

    def __init__(self, betas: list, keep: list[bool] | None = None) -> None:
        super().__init__()
        self.betas, self.keep, self.calls = betas, keep, 0

    def forward(self, margins, beta, gather=None):
        value = torch.tensor(self.betas[self.calls % len(self.betas)])
        self.calls += 1
        keep = torch.tensor(self.keep) if self.keep is not None else self._keep_all(margins)
        return BetaDecision(value, keep)

    def metrics(self):
        return {"beta/used": torch.tensor(-1.0), "script/calls": torch.tensor(float(self.calls))}


def _three_signals() -> dict[str, BetaRule]:
    return {"fixed": FixedBeta(), "batch": BatchAdaptiveBeta(keep_fraction=0.8), "margin": MarginBeta(alpha=0.5)}


def _margins(step: int) -> torch.Tensor:
    """A different, reproducible batch of 4 margins per step."""
    return torch.linspace(-1.0, 3.0, 4) * (1 + 0.3 * step) + 0.1 * step


def test_operators_by_hand():
    weights = normalised_weights([2, 1, 1], ["a", "b", "c"])
    assert_close(weights, torch.tensor([0.5, 0.25, 0.25]))
    # arithmetic: 0.5 * 0.1 + 0.25 * 0.2 + 0.25 * 0.4 = 0.05 + 0.05 + 0.1 = 0.2
    assert_close(arithmetic_fusion(BETAS, weights), torch.tensor([0.2]))
    # geometric: exp(0.5 ln 0.1 + 0.25 ln 0.2 + 0.25 ln 0.4) = exp(-1.783375) = 0.168179
    assert_close(geometric_fusion(BETAS, weights), torch.tensor([0.168179]), atol=1e-6, rtol=0)
    # owa: sorted [0.4, 0.2, 0.1] -> 0.5 * 0.4 + 0.25 * 0.2 + 0.25 * 0.1 = 0.275; signal 3 took the rank-1 weight
    fused, received = owa_fusion(BETAS, weights)
    assert_close(fused, torch.tensor([0.275]))
    assert_close(received, torch.tensor([[0.25], [0.25], [0.5]]))
    # owa extremes: [1, 0, 0] is the max, [0, 0, 1] the min, per pair
    per_pair = torch.tensor([[0.1, 0.5], [0.3, 0.2]])
    assert_close(owa_fusion(per_pair, torch.tensor([1.0, 0.0]))[0], torch.tensor([0.3, 0.5]))
    assert_close(owa_fusion(per_pair, torch.tensor([0.0, 1.0]))[0], torch.tensor([0.1, 0.2]))
    # geometric clamps at MIN_BETA (1e-3) before the log: sqrt(1e-3 * 0.1) = 0.01
    assert_close(geometric_fusion(torch.tensor([[0.0], [0.1]]), torch.tensor([0.5, 0.5])), torch.tensor([0.01]))


def test_precision_weights_and_moments_by_hand():
    # raw weights 0.5 / 1e-8 = 5e7 and 0.5 / 1.0001e-4 = 4999.5: the constant signal gets 5e7 / (5e7 + 4999.5)
    weights = precision_weights(torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1e-4]), 1e-8)
    assert_close(weights, torch.tensor([0.99990001, 0.00009999]), atol=1e-8, rtol=1e-6)
    # momentum 0.9: [0.1, 0.3] first -> mean 0.2, var 0.01; [0.2, 0.2] -> 0.2, 0.009; [0.3] -> 0.21, 0.00891
    mean, var = update_moments(torch.zeros(1), torch.zeros(1), torch.tensor([[0.1, 0.3]]), 0.9, True)
    assert_close((mean, var), (torch.tensor([0.2]), torch.tensor([0.01])))
    mean, var = update_moments(mean, var, torch.tensor([[0.2, 0.2]]), 0.9, torch.tensor(False))
    assert_close((mean, var), (torch.tensor([0.2]), torch.tensor([0.009])))
    mean, var = update_moments(mean, var, torch.tensor([[0.3]]), 0.9, False)
    assert_close((mean, var), (torch.tensor([0.21]), torch.tensor([0.00891])))


@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize("signal", ["fixed", "batch", "margin"])
def test_one_signal_is_that_signal(operator, signal):
    alone, inside = _three_signals()[signal].train(), FusionBeta({signal: _three_signals()[signal]}, operator).train()
    for step in range(4):
        torch.manual_seed(step)  # BatchAdaptiveBeta draws the kept pairs
        expected = alone(_margins(step), 0.1)
        torch.manual_seed(step)
        decision = inside(_margins(step), 0.1)
        assert decision.beta.shape == expected.beta.shape
        assert_close(decision.beta, expected.beta)  # exact but for geometric's exp(log β), one rounding
        assert torch.equal(decision.keep, expected.keep)
    metrics = inside.metrics()
    assert_close(metrics[f"beta/fusion/{signal}/weight"], torch.tensor(1.0))
    assert_close(metrics["beta/used"], expected.beta.mean())


def test_scalar_and_per_pair_signals_broadcast():
    # FixedBeta 0.1 and a per-pair signal [0.2, 0.4, 0.1, 0.3], equal weights: [0.15, 0.25, 0.1, 0.2]
    fusion = FusionBeta({"fixed": FixedBeta(), "pairs": ScriptedBeta([[0.2, 0.4, 0.1, 0.3]])}).train()
    decision = fusion(MARGINS, 0.1)
    assert_close(decision.beta, torch.tensor([0.15, 0.25, 0.1, 0.2]))
    metrics = fusion.metrics()
    assert_close(metrics["beta/used"], torch.tensor(0.175))
    # population std of [0.15, 0.25, 0.1, 0.2] around 0.175: sqrt((0.025² + 0.075² + 0.075² + 0.025²) / 4) = 0.055902
    assert_close(metrics["beta/used_std"], torch.tensor(0.055902), atol=1e-6, rtol=0)
    assert_close(metrics["beta/fusion/pairs/value"], torch.tensor(0.25))
    # only scalars: the fused β is a scalar, 0.5 * 0.1 + 0.5 * 0.3 = 0.2
    scalars = FusionBeta({"fixed": FixedBeta(), "other": ScriptedBeta([0.3])}).train()
    decision = scalars(MARGINS, 0.1)
    assert decision.beta.shape == () and decision.beta.item() == pytest.approx(0.2)
    assert scalars.metrics()["beta/used_std"].item() == 0.0


def test_a_pair_trains_when_every_signal_keeps_it():
    signals = {"a": ScriptedBeta([0.1], [True, True, False, True]), "b": ScriptedBeta([0.1], [True, False, True, True])}
    fusion = FusionBeta(signals).train()
    assert fusion(MARGINS, 0.1).keep.tolist() == [True, False, False, True]
    metrics = fusion.metrics()
    assert metrics["filter/kept_fraction"].item() == 0.5
    # the signals' own metrics, but not their beta/used, appear under beta/fusion/<name>/
    assert metrics["beta/fusion/a/script/calls"].item() == 1.0 and "beta/fusion/a/beta/used" not in metrics


def test_precision_with_a_constant_signal_by_hand():
    # step 1 starts the statistics: means 0.1 and 0.2, both variances 0, equal weights, beta (0.1 + 0.2) / 2 = 0.15.
    # step 2, the script says 0.4: mean 0.9 * 0.2 + 0.1 * 0.4 = 0.22, var 0.1 * (0.4 - 0.22)² = 0.00324; the
    # fixed signal keeps var 0. Weights 1 / 1e-8 against 1 / 0.00324001: r = 1e-8 / 0.00324001 = 3.086410e-6,
    # so fixed weighs 1 / (1 + r) = 0.999996914 and the script r / (1 + r) = 3.086400e-6; beta = 0.1 + 0.3·w2.
    fusion = FusionBeta({"fixed": FixedBeta(), "moving": ScriptedBeta([0.2, 0.4])}, "precision").train()
    assert_close(fusion(MARGINS, 0.1).beta, torch.tensor(0.15))
    assert_close(fusion.metrics()["beta/fusion/fixed/weight"], torch.tensor(0.5))
    decision = fusion(MARGINS, 0.1)
    assert_close(fusion.beta_var, torch.tensor([0.0, 0.00324]))
    assert_close(fusion.num_updates, torch.tensor(2))
    metrics = fusion.metrics()
    assert_close(metrics["beta/fusion/moving/weight"], torch.tensor(3.0864e-6), rtol=1e-4, atol=0)
    assert_close(metrics["beta/fusion/fixed/weight"], torch.tensor(0.999996914), rtol=1e-6, atol=0)
    assert torch.isfinite(decision.beta) and decision.beta.item() == pytest.approx(0.1 + 0.3 * 3.0864e-6, rel=1e-6)


@pytest.mark.parametrize("operator", OPERATORS)
def test_state_resumes_exactly(operator):
    def run(fusion, steps):
        betas = []
        for step in steps:
            torch.manual_seed(step)
            betas.append(fusion(_margins(step), 0.1).beta)
        return betas

    straight = FusionBeta(_three_signals(), operator).train()
    expected = run(straight, range(6))
    first = FusionBeta(_three_signals(), operator).train()
    run(first, range(3))
    resumed = FusionBeta(_three_signals(), operator).train()
    resumed.load_state_dict(first.state_dict())
    assert "num_updates" in first.state_dict() and "signals.margin.margin_std" in first.state_dict()
    for got, want in zip(run(resumed, range(3, 6)), expected[3:], strict=True):
        assert torch.equal(got, want)
    for name, buffer in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], buffer), name


def test_two_ranks_agree_and_match_one_process():
    # Two threads stand for two DDP ranks; `gather` concatenates both ranks' tensors in rank order, like all_gather.
    barrier, slots = threading.Barrier(2, timeout=20), [None, None]

    def gather_for(rank):
        def gather(tensor):
            slots[rank] = tensor.reshape(-1).clone()
            barrier.wait()
            everyone = torch.cat(list(slots))
            barrier.wait()  # nobody overwrites a slot before both have read it
            return everyone

        return gather

    def signals():
        return {"batch": BatchAdaptiveBeta(keep_fraction=1.0), "margin": MarginBeta(alpha=0.5)}

    ranks = [FusionBeta(signals(), "precision").train() for _ in range(2)]
    results = [[], []]

    def train(rank):
        for step in range(3):
            margins = _margins(step)[rank * 2 : rank * 2 + 2] if step else _margins(step) * (rank + 1)
            results[rank].append((ranks[rank](margins, 0.1, gather=gather_for(rank)).beta, ranks[rank].metrics()))

    threads = [threading.Thread(target=train, args=(rank,), daemon=True) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results[0]) == len(results[1]) == 3
    for name, buffer in ranks[0].state_dict().items():
        assert torch.equal(ranks[1].state_dict()[name], buffer), name
    for key in ("beta/fusion/batch/weight", "beta/fusion/margin/weight", "beta/fusion/margin/margin/ema_std"):
        assert torch.equal(results[0][-1][1][key], results[1][-1][1][key]), key

    # One process that sees both ranks' pairs at once computes the same statistics and the same β per pair.
    single = FusionBeta(signals(), "precision").train()
    for step in range(3):
        margins = _margins(step) if step else torch.cat([_margins(0), _margins(0) * 2])
        beta = single(margins, 0.1).beta
    assert_close(single.beta_var, ranks[0].beta_var)
    assert_close(torch.cat([results[0][-1][0], results[1][-1][0]]), beta)


@pytest.mark.parametrize("operator", OPERATORS)
def test_eval_mode_gives_beta0_and_updates_nothing(operator):
    # a signal that ignores eval mode (β 0.5, drops a pair) must not reach the validation loss either
    signals = {**_three_signals(), "stubborn": ScriptedBeta([0.5], [True, False, True, True])}
    fusion = FusionBeta(signals, operator).train()
    fusion(_margins(1), 0.1)
    before = {name: buffer.clone() for name, buffer in fusion.state_dict().items()}
    decision = fusion.eval()(_margins(2), 0.2)
    assert_close(decision.beta, torch.full((4,), 0.2))
    assert decision.keep.all()
    for name, buffer in fusion.state_dict().items():
        assert torch.equal(buffer, before[name]), name
    metrics = fusion.metrics()
    assert metrics["beta/used"].item() == pytest.approx(0.2) and metrics["filter/kept_fraction"].item() == 1.0


def test_a_learnable_signal_still_learns_through_the_fusion():
    # arithmetic with equal weights: beta = 0.5 * 0.1 + 0.5 * 0.1 * exp(s), d beta / d s = 0.05 at s = 0
    fusion = FusionBeta({"fixed": FixedBeta(), "learned": LearnableBeta()}).train()
    fusion(MARGINS, 0.1).beta.backward()
    assert_close(fusion.signals["learned"].log_scale.grad, torch.tensor(0.05))


def test_beta_dpo_loss_logs_the_fusion_metrics():
    logps = PreferenceLogps(
        policy_chosen=torch.tensor([-1.0, -2.0, -3.0, -4.0]),
        policy_rejected=torch.tensor([-5.0, -4.0, -3.0, -1.0]),
        reference_chosen=torch.tensor([-2.0, -2.0, -3.0, -3.0]),
        reference_rejected=torch.tensor([-3.0, -2.0, -3.0, -1.0]),
        chosen_tokens=torch.tensor([4, 4, 4, 4]),
        rejected_tokens=torch.tensor([4, 4, 4, 4]),
    )  # margins [3, 2, 0, -1]
    loss = BetaDPOLoss(beta=0.1, rule=FusionBeta(_three_signals())).train()
    torch.manual_seed(0)
    _, metrics = loss(logps)
    expected = {"beta/used", "beta/used_std", "filter/kept_fraction"}
    for name in ("fixed", "batch", "margin"):
        expected |= {f"beta/fusion/{name}/value", f"beta/fusion/{name}/weight"}
    expected |= {f"beta/fusion/{n}/margin/ema_{s}" for n in ("batch", "margin") for s in ("mean", "std")}
    expected |= {"beta/fusion/batch/filter/kept_fraction"}
    assert expected <= set(metrics)
    assert all(math.isfinite(metrics[name].item()) for name in expected)
    assert metrics["filter/kept_fraction"].item() == 0.75  # BatchAdaptiveBeta keeps floor(0.8 * 4) = 3


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="weights has 2 values but there are 3 signals"):
        FusionBeta(_three_signals(), weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="weights must be finite, non-negative"):
        FusionBeta(_three_signals(), weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="not all zero"):
        FusionBeta(_three_signals(), weights=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="operator 'median' is unknown"):
        FusionBeta(_three_signals(), operator="median")
    with pytest.raises(ValueError, match="signals is empty"):
        FusionBeta({})
    with pytest.raises(ValueError, match="signals.fixed must be a β rule"):
        FusionBeta({"fixed": 0.1})
    with pytest.raises(ValueError, match="contain no '.'"):
        FusionBeta({"a.b": FixedBeta()})
    with pytest.raises(ValueError, match="momentum"):
        FusionBeta(_three_signals(), momentum=1.0)
    with pytest.raises(ValueError, match="min_variance"):
        FusionBeta(_three_signals(), min_variance=0.0)
    with pytest.raises(ValueError, match=r"signal 'odd' \(ScriptedBeta\) returned a beta of shape \(2,\)"):
        FusionBeta({"odd": ScriptedBeta([[0.1, 0.2]])}).train()(MARGINS, 0.1)
