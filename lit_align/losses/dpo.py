"""The DPO loss family: `DPOLoss`, the object a recipe names, and `dpo_loss`, the formula it evaluates.

Nothing here knows about models, tokenizers, devices or logging: a loss takes the log-probs the module
computed and returns the loss and its metrics. That keeps every formula testable with hand-picked numbers
and lets a new loss be written without touching the training loop.

The variants share one function because they share one quantity: the margin ``beta * h`` between the chosen
and rejected log-ratios. A variant changes how the margin is formed (SimPO, R-DPO), which function of it is
minimised (sigmoid, robust, IPO, hinge), or what is added to the result (RPO's NLL term).

References:
- DPO: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model".
- Conservative DPO (label smoothing): the DPO authors' code and Mitchell 2023, "A note on DPO with noisy
  preferences".
- Robust DPO: Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with Noisy Feedback".
- IPO: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences".
- Hinge: the SLiC-HF calibration loss (Zhao et al. 2023) applied to the DPO log-ratio.
- SimPO: Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward".
- R-DPO: Park et al. 2024, "Disentangling Length from Quality in Direct Preference Optimization".
- RPO: Pang et al. 2024, "Iterative Reasoning Preference Optimization".
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F

from lit_align.losses.base import LossOutput, PreferenceLoss
from lit_align.losses.logps import PreferenceLogps

DPOLossType = Literal["sigmoid", "robust", "ipo", "hinge", "simpo"]

AVERAGED_LOSS_TYPES = ("ipo", "simpo")
"""Loss types defined on log-probs averaged over the completion's tokens: `DPOLoss` divides before `dpo_loss`."""

REFERENCE_FREE_LOSS_TYPES = ("simpo",)
"""Loss types that ignore the reference log-probs: the module skips the reference forward."""


class DPOLossOutput(NamedTuple):
    losses: torch.Tensor  # [B], per-example loss
    chosen_rewards: torch.Tensor  # [B], beta * (policy - reference) on the chosen completion, detached
    rejected_rewards: torch.Tensor  # [B], the same on the rejected completion, detached


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
    *,
    simpo_gamma: float = 0.5,
    length_penalty: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    rpo_alpha: float = 0.0,
    chosen_nll: torch.Tensor | None = None,
) -> DPOLossOutput:
    """Per-example DPO losses and implicit rewards.

    With ``h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)`` and the margin
    ``z = beta * h``, ``eps = label_smoothing``:

    - ``sigmoid``: ``-(1 - eps) * logsigmoid(z) - eps * logsigmoid(-z)``. ``eps`` is the probability that a
      label is flipped (conservative DPO, as in the DPO authors' code). Current TRL's ``sigmoid`` ignores
      ``label_smoothing``: with ``eps > 0`` our curves differ from a TRL run by design; with ``eps = 0`` they
      are the same loss.
    - ``robust``: ``((1 - eps) * -logsigmoid(z) - eps * -logsigmoid(-z)) / (1 - 2 * eps)``, Chowdhury et al.'s
      unbiased estimate of the clean loss under label flips with probability ``eps``, with the paper's and
      TRL's ``robust`` signs: averaged over a flip, ``(1 - eps) * R(z) + eps * R(-z)`` is exactly
      ``-logsigmoid(z)``. It equals ``-logsigmoid(z) - eps * z / (1 - 2 * eps)``: unlike ``sigmoid`` with
      smoothing it is unbounded below and keeps pushing ``h`` up at any margin; ``eps = 0`` is ``sigmoid``.
    - ``ipo``: ``(h - 1 / (2 * beta)) ** 2``. The IPO paper's results use log-probs averaged over the
      completion's tokens; the caller passes those (see ``AVERAGED_LOSS_TYPES``).
    - ``hinge``: ``relu(1 - z)``.
    - ``simpo``: ``sigmoid`` on ``z = beta * (policy_chosen - policy_rejected) - simpo_gamma``, with
      per-token-averaged log-probs (the caller averages) and the reference ignored (Meng et al. 2024).
      ``simpo_gamma`` is the paper's target margin ``gamma`` itself, as TRL's CPO ``simpo_gamma``; the authors'
      scripts set ``gamma_beta_ratio = gamma / beta`` instead (beta 2.0 with ratio 0.5 is gamma 1.0).
      Rewards are ``beta * policy`` log-probs.

    ``length_penalty`` (R-DPO, Park et al. 2024) adds ``alpha * (|y_w| - |y_l|)`` to the margin:
    ``z = beta * h + length_penalty * (chosen_lengths - rejected_lengths)``, lengths in completion tokens.
    The sign comes from penalising length in the RLHF objective, ``r(x, y) - alpha * |y|``: the reward implied
    by the policy is then ``beta * log-ratio + alpha * |y|``, so a pair whose chosen answer is the longer one
    is already partly "explained" by length and pushes the log-ratio less, while a pair whose chosen answer is
    shorter pushes it more. The policy stops being paid for length. ``alpha`` is not multiplied by ``beta``:
    it moves the margin by ``alpha`` per token of length difference. It applies to every type but ``ipo``
    (which has no margin).

    ``rpo_alpha`` (RPO, Pang et al. 2024) adds ``rpo_alpha * chosen_nll`` to every loss, ``chosen_nll`` being
    the per-example mean token NLL of the chosen answer, computed by the caller; the weight is on the NLL term
    (1.0 in the paper's experiments). TRL 1.16 has no ``rpo_alpha`` any more: its equivalent is
    ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1.0, alpha]``, whose ``sft`` term averages the NLL over
    all chosen completion tokens of the batch, so long answers weigh more there; here each pair's mean counts once
    (the two agree when every chosen answer has the same length).

    Rewards are ``beta * (policy - reference)`` per completion, detached: they are metrics, not targets; the
    length term and the NLL are not part of them.

    ``beta`` is a float, a 0-dim tensor, or a ``[B]`` tensor with one β per pair (β-DPO's ``MarginBeta``,
    ``FusionBeta``). Per pair, every formula above holds pair by pair: the margin ``z_i = beta_i * h_i``, IPO's
    target ``1 / (2 * beta_i)``, the loss and both rewards of pair i use ``beta_i``, so the result equals B
    separate calls with scalar β. A tensor β that requires grad passes its gradient through (a learned β).

    Example (sigmoid, beta=0.5, eps=0): policy logps chosen -1, rejected -3; reference -2 and -2.
    h = (-1 + 2) - (-3 + 2) = 2, so loss = -logsigmoid(1) = log(1 + e^-1) = 0.3133; rewards 0.5 and -0.5.
    """
    check_dpo_arguments(loss_type, label_smoothing)
    if loss_type in REFERENCE_FREE_LOSS_TYPES:
        chosen_logratios, rejected_logratios = policy_chosen_logps, policy_rejected_logps
    else:
        chosen_logratios = policy_chosen_logps - reference_chosen_logps
        rejected_logratios = policy_rejected_logps - reference_rejected_logps
    h = chosen_logratios - rejected_logratios

    z = beta * h
    if length_penalty:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("length_penalty (R-DPO) needs chosen_lengths and rejected_lengths")
        if loss_type == "ipo":
            raise ValueError("length_penalty (R-DPO) shifts the logistic margin; loss_type ipo has none")
        z = z + length_penalty * (chosen_lengths - rejected_lengths)
    if loss_type == "simpo":
        z = z - simpo_gamma

    eps = label_smoothing
    if loss_type in ("sigmoid", "simpo"):
        losses = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - z)

    if rpo_alpha:
        if chosen_nll is None:
            raise ValueError("rpo_alpha (RPO) needs chosen_nll")
        losses = losses + rpo_alpha * chosen_nll

    chosen_rewards = (beta * chosen_logratios).detach()
    rejected_rewards = (beta * rejected_logratios).detach()
    return DPOLossOutput(losses, chosen_rewards, rejected_rewards)


def preference_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Batch means under TRL's metric names, so curves compare one to one with a TRL run.

    ``rewards/accuracies`` is the share of pairs whose chosen reward is strictly greater than the rejected
    one (TRL's definition): when the policy still equals the reference, every reward is 0 and it is 0.
    """
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }


def check_dpo_arguments(loss_type: str, label_smoothing: float) -> None:
    """Raise at construction what `dpo_loss` would only raise at the first step."""
    if loss_type not in get_args(DPOLossType):
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of {', '.join(get_args(DPOLossType))}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")


class DPOLoss(PreferenceLoss):
    """DPO and its variants on one batch of pairs; the formulas are `dpo_loss`'s.

    Args:
        beta: Strength of the KL penalty towards the reference (the DPO paper's beta).
        loss_type: ``sigmoid`` (DPO), ``robust`` (robust DPO), ``ipo`` (on per-token-averaged log-probs),
            ``hinge``, or ``simpo`` (per-token-averaged log-probs, no reference: the module then runs none).
        label_smoothing: Assumed probability that a preference label is flipped (conservative DPO for
            ``sigmoid`` and ``simpo``, the noise rate for ``robust``).
        simpo_gamma: SimPO's target margin gamma (TRL's ``simpo_gamma``). Only read by ``simpo``.
        length_penalty: R-DPO's alpha, ``alpha * (|y_w| - |y_l|)`` (completion tokens) added to the margin. 0: off.
        rpo_alpha: RPO's weight of an NLL term on the chosen completion (per-token mean), logged as ``nll_loss``.
            0: off.

    Logged: TRL's ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``, ``rewards/margins``,
    ``logps/chosen``, ``logps/rejected`` (sums over the completion), and ``nll_loss`` with ``rpo_alpha``.
    """

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: DPOLossType = "sigmoid",
        label_smoothing: float = 0.0,
        simpo_gamma: float = 0.5,
        length_penalty: float = 0.0,
        rpo_alpha: float = 0.0,
    ) -> None:
        super().__init__()
        check_dpo_arguments(loss_type, label_smoothing)
        if length_penalty and loss_type == "ipo":
            raise ValueError("length_penalty (R-DPO) shifts the logistic margin; loss_type ipo has none")
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.simpo_gamma = simpo_gamma
        self.length_penalty = length_penalty
        self.rpo_alpha = rpo_alpha

    @property
    def reference_free(self) -> bool:
        return self.loss_type in REFERENCE_FREE_LOSS_TYPES

    @property
    def averaged_logps(self) -> bool:
        return self.loss_type in AVERAGED_LOSS_TYPES

    def per_pair(self, logps: PreferenceLogps) -> DPOLossOutput:
        """`dpo_loss` with this object's settings: per-pair losses and rewards."""
        summed, used = logps, logps.averaged() if self.averaged_logps else logps
        return dpo_loss(
            used.policy_chosen,
            used.policy_rejected,
            used.reference_chosen,
            used.reference_rejected,
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            simpo_gamma=self.simpo_gamma,
            length_penalty=self.length_penalty,
            chosen_lengths=summed.chosen_tokens,
            rejected_lengths=summed.rejected_tokens,
            rpo_alpha=self.rpo_alpha,
            chosen_nll=summed.chosen_mean_nll() if self.rpo_alpha else None,
        )

    def pair_metrics(self, out: DPOLossOutput, logps: PreferenceLogps) -> dict[str, torch.Tensor]:
        """TRL's metrics for ``out``, plus ``nll_loss`` when the RPO term is on."""
        metrics = preference_metrics(
            out.chosen_rewards, out.rejected_rewards, logps.policy_chosen, logps.policy_rejected
        )
        if self.rpo_alpha:
            metrics["nll_loss"] = logps.chosen_mean_nll().detach().mean()
        return metrics

    def forward(self, logps: PreferenceLogps) -> LossOutput:
        out = self.per_pair(logps)
        return LossOutput(out.losses.mean(), self.pair_metrics(out, logps))
