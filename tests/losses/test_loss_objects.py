"""What every preference loss promises the module that calls it, checked on each loss object at once.

A loss says what it needs through its flags (the module then runs no pass it does not need), returns a
scalar loss and detached scalar metrics, ignores the reference when it says it is reference-free, and its
gradient raises the chosen log-prob and lowers the rejected one. The hand-computed cases are in the file of
each loss.
"""

import pytest
import torch
from torch.testing import assert_close

from lit_align.losses import (
    BetaDPOLoss,
    DPOLoss,
    LossOutput,
    ORPOLoss,
    PreferenceGuidedLoss,
    PreferenceLogps,
    PreferenceLoss,
)
from lit_align.losses.beta_rules import BatchAdaptiveBeta, FixedBeta, LearnableBeta

# (factory, reference_free, sequence_nll, plain_logps, averaged_logps)
LOSSES = {
    "dpo-sigmoid": (lambda: DPOLoss(), False, False, False, False),
    "dpo-robust": (lambda: DPOLoss(loss_type="robust", label_smoothing=0.1), False, False, False, False),
    "dpo-hinge": (lambda: DPOLoss(loss_type="hinge"), False, False, False, False),
    "dpo-ipo": (lambda: DPOLoss(loss_type="ipo"), False, False, False, True),
    "dpo-simpo": (lambda: DPOLoss(loss_type="simpo"), True, False, False, True),
    "dpo-rdpo-rpo": (lambda: DPOLoss(length_penalty=0.01, rpo_alpha=0.5), False, False, False, False),
    "orpo": (lambda: ORPOLoss(), True, True, False, True),
    "orpo-completion-nll": (lambda: ORPOLoss(nll_on_prompt=False), True, False, False, True),
    "beta-dpo": (lambda: BetaDPOLoss(), False, False, False, False),
    "beta-dpo-keep-all": (lambda: BetaDPOLoss(rule=BatchAdaptiveBeta(keep_fraction=1.0)), False, False, False, False),
    "beta-dpo-fixed": (lambda: BetaDPOLoss(rule=FixedBeta()), False, False, False, False),
    "beta-dpo-learnable": (lambda: BetaDPOLoss(rule=LearnableBeta()), False, False, False, False),
    "preference-guided": (lambda: PreferenceGuidedLoss(), False, False, True, False),
}
# Default β-DPO drops a random fifth of the pairs: a dropped pair gets no gradient.
EVERY_PAIR_TRAINS = [name for name in LOSSES if name != "beta-dpo"]


def _random_pairs(n: int = 8, seed: int = 0, requires_grad: bool = False) -> PreferenceLogps:
    """Every field a loss may read, as sums over 1 to 39 tokens of per-token log-probs in [-2.2, -0.2]."""
    generator = torch.Generator().manual_seed(seed)
    c, r = torch.randint(1, 40, (2, n), generator=generator)
    per_token = -0.2 - 2 * torch.rand(6, n, generator=generator)
    policy = (per_token[0] * c).requires_grad_(requires_grad), (per_token[1] * r).requires_grad_(requires_grad)
    return PreferenceLogps(
        *policy,
        reference_chosen=per_token[2] * c,
        reference_rejected=per_token[3] * r,
        chosen_tokens=c,
        rejected_tokens=r,
        chosen_sequence_nll=-per_token[4],
        plain_policy_chosen=per_token[4] * c,
        plain_policy_rejected=per_token[5] * r,
    )


@pytest.mark.parametrize("name", LOSSES)
def test_flags_say_what_the_loss_reads(name):
    make, reference_free, sequence_nll, plain_logps, averaged_logps = LOSSES[name]
    loss = make()
    assert isinstance(loss, PreferenceLoss) and loss.gather is None
    assert (loss.reference_free, loss.sequence_nll, loss.plain_logps, loss.averaged_logps) == (
        reference_free,
        sequence_nll,
        plain_logps,
        averaged_logps,
    )


@pytest.mark.parametrize("name", LOSSES)
def test_returns_a_scalar_loss_and_detached_scalar_metrics(name):
    out = LOSSES[name][0]().train()(_random_pairs(requires_grad=True))
    assert isinstance(out, LossOutput)
    assert out.loss.shape == () and out.loss.requires_grad and torch.isfinite(out.loss)
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(out.metrics)
    for metric, value in out.metrics.items():
        assert value.shape == () and not value.requires_grad and torch.isfinite(value), metric


@pytest.mark.parametrize("name", EVERY_PAIR_TRAINS)
def test_gradient_raises_chosen_and_lowers_rejected(name):
    # At the first step, where the policy is the reference (h = 0: hinge is not yet flat, IPO's target 1 / (2 beta)
    # is above); the reference-free losses see the random log-probs as they are.
    logps = _random_pairs(requires_grad=True)
    logps.reference_chosen, logps.reference_rejected = logps.policy_chosen.detach(), logps.policy_rejected.detach()
    LOSSES[name][0]().train()(logps).loss.backward()
    assert (logps.policy_chosen.grad < 0).all() and (logps.policy_rejected.grad > 0).all()


@pytest.mark.parametrize("name", LOSSES)
def test_reference_is_ignored_exactly_when_the_loss_says_so(name):
    make, reference_free = LOSSES[name][0], LOSSES[name][1]
    logps, shifted = _random_pairs(), _random_pairs()
    shifted.reference_chosen = shifted.reference_chosen - 3 * torch.arange(8)
    shifted.reference_rejected = shifted.reference_rejected + 5
    loss, metrics = make().eval()(logps)  # eval: default β-DPO draws no pairs to drop
    shifted_loss, shifted_metrics = make().eval()(shifted)
    if reference_free:
        assert_close(shifted_loss, loss, rtol=0, atol=0)
        for metric, value in metrics.items():
            assert_close(shifted_metrics[metric], value, rtol=0, atol=0, msg=metric)
    else:
        assert not torch.allclose(shifted_loss, loss)
