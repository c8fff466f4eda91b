"""ORPO: preference optimisation folded into supervised fine-tuning, with no reference model.

Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model". The loss is an NLL term
on the chosen answer plus a weighted odds-ratio term that pushes the odds of the chosen answer above those of
the rejected one. There is no reference model, so a run needs one forward of the policy per step and one
copy of the weights in memory: that is the trade-off against DPO, whose KL anchor to a reference ORPO
replaces with the NLL term.

The odds of a completion are ``p / (1 - p)`` with ``p`` the *per-token average* probability, so the loss
takes log-probs averaged over the completion's tokens. ``1 - p`` is where it can break numerically: in
float32, ``1 - exp(x)`` rounds to 0 for ``x`` within ~6e-8 of 0 and cancels catastrophically well before,
so ``log(1 - exp(x))`` goes through :func:`log1mexp`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lit_align.losses.base import LossOutput, PreferenceLoss
from lit_align.losses.dpo import preference_metrics
from lit_align.losses.logps import PreferenceLogps


class ORPOLossOutput(NamedTuple):
    losses: torch.Tensor  # [B], chosen_nll - lam * logsigmoid(log_odds)
    chosen_rewards: torch.Tensor  # [B], lam * average chosen log-prob, detached (TRL's ORPO rewards)
    rejected_rewards: torch.Tensor  # [B], lam * average rejected log-prob, detached
    log_odds_ratio: torch.Tensor  # [B], logsigmoid(log_odds), detached (TRL's `log_odds_ratio` before the mean)
    log_odds_chosen: torch.Tensor  # [B], log_odds itself, detached (TRL's `log_odds_chosen` before the mean)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, exact to float rounding over the whole range, with finite gradients.

    Mächler 2012, "Accurately Computing log(1 - exp(-|a|))": ``log(-expm1(x))`` for ``x > -ln 2`` (where
    ``exp(x)`` is close to 1 and ``1 - exp(x)`` would cancel) and ``log1p(-exp(x))`` below (where ``exp(x)`` is
    small and ``log`` of a number close to 1 would lose it). Each branch is evaluated on inputs where it is
    finite (the other branch's positions get a harmless stand-in), so the ``where`` passes no NaN gradient.

    The one floor: ``-expm1(x)`` is held at least the smallest normal float (``log`` of it is -87.3 in float32)
    so an average log-prob of exactly 0 (every token predicted with probability 1) gives a finite value and a zero
    gradient instead of ``log(0) = -inf``. Nowhere else is the input changed: at ``x = -1e-9`` the result is
    ``ln(1e-9) = -20.72`` and its gradient ``exp(x) / expm1(x) = -1e9``.
    """
    near_zero = x > -math.log(2)
    tiny = torch.finfo(x.dtype).tiny
    near = torch.where(near_zero, x, torch.full_like(x, -1.0))
    far = torch.where(near_zero, torch.full_like(x, -1.0), x)
    return torch.where(near_zero, torch.log((-torch.expm1(near)).clamp(min=tiny)), torch.log1p(-torch.exp(far)))


def orpo_loss(
    policy_chosen_avg_logps: torch.Tensor,
    policy_rejected_avg_logps: torch.Tensor,
    chosen_nll: torch.Tensor,
    lam: float = 0.2,
) -> ORPOLossOutput:
    """Per-example ORPO losses, rewards and log-odds.

    With ``lc``, ``lr`` the chosen and rejected log-probs averaged over completion tokens (so the paper's
    ``P(y|x)`` is ``exp(lc)``) and ``odds(y) = P / (1 - P)``:

    - ``log_odds = log odds(y_w) - log odds(y_l) = (lc - lr) - (log(1 - e^lc) - log(1 - e^lr))``,
    - ``loss = chosen_nll - lam * logsigmoid(log_odds)``, i.e. the paper's ``L_SFT + lam * L_OR`` with
      ``L_OR = -log sigmoid(log_odds)``. ``chosen_nll`` is ``L_SFT`` per pair, computed by the caller
      (`ORPOLoss`: the mean token NLL of each chosen sequence, see its ``nll_on_prompt``).

    ``lam`` is TRL's ``beta``; the paper uses 0.1 to 0.25. Rewards follow TRL's ORPO: ``lam * lc`` and
    ``lam * lr``, detached, so ``rewards/accuracies`` is the share of pairs whose chosen answer has the higher
    average log-prob.

    Example (lam = 0.2, chosen_nll = 1.5): lc = ln 0.5, lr = ln 0.25. Odds 0.5 / 0.5 = 1 and 0.25 / 0.75 = 1/3,
    so log_odds = ln 1 - ln(1/3) = ln 3 = 1.098612; logsigmoid(ln 3) = ln(3 / 4) = -0.287682;
    loss = 1.5 + 0.2 * ln(4 / 3) = 1.5 + 0.057536 = 1.557536; rewards 0.2 ln 0.5 = -0.138629 and
    0.2 ln 0.25 = -0.277259.
    """
    log_odds = (policy_chosen_avg_logps - policy_rejected_avg_logps) - (
        log1mexp(policy_chosen_avg_logps) - log1mexp(policy_rejected_avg_logps)
    )
    log_odds_ratio = F.logsigmoid(log_odds)
    losses = chosen_nll - lam * log_odds_ratio
    return ORPOLossOutput(
        losses,
        (lam * policy_chosen_avg_logps).detach(),
        (lam * policy_rejected_avg_logps).detach(),
        log_odds_ratio.detach(),
        log_odds.detach(),
    )


class ORPOLoss(PreferenceLoss):
    """ORPO: SFT on the chosen answer plus an odds-ratio preference term, without a reference model.

    Reference-free: the module runs no reference (``reference`` must be ``auto`` or ``none``), so a step costs
    one forward and backward of the policy, as in SFT.

    Args:
        lam: Weight of the odds-ratio term, the paper's lambda (0.1 to 0.25 in the paper; TRL's ``beta``).
        nll_on_prompt: NLL over every token of the chosen sequence, prompt included, as the authors' code (by
            default) and TRL 1.16's ORPOTrainer (``trl.experimental.orpo``) both compute it. ``False`` restricts it to
            the chosen completion's tokens (the authors' ``disable_prompt_loss``). Here the NLL is a per-sequence
            mean over tokens, then a mean over pairs; the authors and TRL average over every chosen token of the
            batch at once, so their long sequences weigh more. The two agree when all chosen sequences have one
            length; ``nll_loss`` and the loss then equal TRL's on the same batch.

    Logged besides the loss, with TRL's ORPO names and definitions: ``nll_loss`` (the NLL term),
    ``log_odds_ratio`` (mean of ``logsigmoid(log_odds)``, so minus the unweighted odds-ratio loss),
    ``log_odds_chosen`` (mean of ``log_odds``), ``rewards/*`` (``lam`` times the average log-probs) and
    ``logps/chosen`` and ``logps/rejected`` (per-token *averages*, the log-probs ORPO works with and TRL logs
    for ORPO; DPO logs sums).
    """

    reference_free = True
    averaged_logps = True

    def __init__(self, lam: float = 0.2, nll_on_prompt: bool = True) -> None:
        super().__init__()
        self.lam = lam
        self.nll_on_prompt = nll_on_prompt

    @property
    def sequence_nll(self) -> bool:
        return self.nll_on_prompt

    def forward(self, logps: PreferenceLogps) -> LossOutput:
        averaged = logps.averaged()
        if not self.nll_on_prompt:
            chosen_nll = -averaged.policy_chosen
        elif logps.chosen_sequence_nll is None:
            raise ValueError("ORPOLoss(nll_on_prompt=True) needs chosen_sequence_nll, which the module computes")
        else:
            chosen_nll = logps.chosen_sequence_nll
        out = orpo_loss(averaged.policy_chosen, averaged.policy_rejected, chosen_nll, lam=self.lam)
        metrics = preference_metrics(
            out.chosen_rewards, out.rejected_rewards, averaged.policy_chosen, averaged.policy_rejected
        )
        metrics["nll_loss"] = chosen_nll.detach().mean()
        metrics["log_odds_ratio"] = out.log_odds_ratio.mean()
        metrics["log_odds_chosen"] = out.log_odds_chosen.mean()
        return LossOutput(out.losses.mean(), metrics)
