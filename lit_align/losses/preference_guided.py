"""Preference-guided DPO: DPO under a preference instruction, plus a term that moves the preference into the
unguided policy.

With an instruction in the input (a system message, or a learned soft prompt) the policy already leans towards
the preferred answers, so DPO on guided inputs learns from a better-informed policy. At inference there is no
instruction, so a consistency term pulls the unguided policy's preference gap towards the guided one. The
guided side is a target there (stop-gradient): the consistency term must change the unguided policy, not drag
the guided one down to it.

The loss is the DPO loss of ``lit_align.losses.dpo`` on the guided log-probs plus that squared gap; nothing here
knows how the guidance is given (`lit_align.modules.preference_guided` does).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lit_align.losses.base import LossOutput
from lit_align.losses.dpo import DPOLoss, DPOLossType, dpo_loss
from lit_align.losses.logps import PreferenceLogps


class PreferenceGuidedLossOutput(NamedTuple):
    losses: torch.Tensor  # [B], dpo_losses + alpha * aligned_losses
    dpo_losses: torch.Tensor  # [B], DPO on the guided log-probs
    aligned_losses: torch.Tensor  # [B], (h_plain - stopgrad(h_guided))^2
    chosen_rewards: torch.Tensor  # [B], beta * (guided policy - guided reference) on chosen, detached
    rejected_rewards: torch.Tensor  # [B], the same on rejected, detached
    advantage: torch.Tensor  # [B], h_guided - h_plain, detached


def preference_guided_loss(
    guided_policy_chosen_logps: torch.Tensor,
    guided_policy_rejected_logps: torch.Tensor,
    guided_reference_chosen_logps: torch.Tensor,
    guided_reference_rejected_logps: torch.Tensor,
    plain_policy_chosen_logps: torch.Tensor,
    plain_policy_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    alpha: float = 1.0,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
    **dpo_options,
) -> PreferenceGuidedLossOutput:
    """Per-pair preference-guided DPO losses.

    With ``g`` the guidance, ``h_guided = log pi(y_w | g, x) - log pi(y_l | g, x)`` and
    ``h_plain = log pi(y_w | x) - log pi(y_l | x)`` (sums over completion tokens):

        loss = DPO(guided policy, guided reference; beta, loss_type, label_smoothing)
               + alpha * (h_plain - stopgrad(h_guided)) ** 2

    The mean of the per-pair losses is ``mean(DPO) + alpha * mean((h_plain - stopgrad(h_guided))^2)``. The
    second term's gradient reaches only the plain log-probs; with ``alpha = 0`` the loss is DPO on the guided
    inputs. ``advantage = h_guided - h_plain`` says how much more the guided policy prefers the chosen answer.
    Log-probs are sums over the completion: ``loss_type`` must be one that takes sums (not ``ipo``/``simpo``).
    ``dpo_options`` go to `dpo_loss` for the guided term (R-DPO's ``length_penalty``, RPO's ``rpo_alpha``, ...).

    Example (sigmoid, beta = 0.5, alpha = 0.1): guided policy chosen -1, rejected -3; guided reference -2, -2;
    plain policy -2, -3. DPO: h = (-1 + 2) - (-3 + 2) = 2, -logsigmoid(0.5 * 2) = log(1 + e^-1) = 0.3133.
    h_guided = -1 + 3 = 2, h_plain = -2 + 3 = 1, aligned = (1 - 2)^2 = 1, loss = 0.3133 + 0.1 * 1 = 0.4133;
    rewards 0.5 and -0.5; advantage 2 - 1 = 1.
    """
    dpo = dpo_loss(
        guided_policy_chosen_logps,
        guided_policy_rejected_logps,
        guided_reference_chosen_logps,
        guided_reference_rejected_logps,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        **dpo_options,
    )
    aligned, advantage = consistency_term(
        guided_policy_chosen_logps, guided_policy_rejected_logps, plain_policy_chosen_logps, plain_policy_rejected_logps
    )
    return PreferenceGuidedLossOutput(
        losses=dpo.losses + alpha * aligned,
        dpo_losses=dpo.losses,
        aligned_losses=aligned,
        chosen_rewards=dpo.chosen_rewards,
        rejected_rewards=dpo.rejected_rewards,
        advantage=advantage,
    )


def consistency_term(
    guided_chosen: torch.Tensor, guided_rejected: torch.Tensor, plain_chosen: torch.Tensor, plain_rejected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h_plain - stopgrad(h_guided))^2`` and the detached ``advantage = h_guided - h_plain``, per pair."""
    h_guided = guided_chosen - guided_rejected
    h_plain = plain_chosen - plain_rejected
    return (h_plain - h_guided.detach()) ** 2, (h_guided - h_plain).detach()


class PreferenceGuidedLoss(DPOLoss):
    """DPO on the guided log-probs plus ``alpha`` times the guided-to-plain consistency term.

    Args:
        alpha: Weight of the consistency term ``(h_plain - stopgrad(h_guided))^2``. ``h`` sums log-probs over the
            answer while DPO sees ``beta * h``, so ``alpha = beta^2`` (0.01 at beta 0.1) puts the terms on one
            scale (the default). At 1.0 the consistency term drowns DPO (the quickstart's validation
            accuracy stays at 0.45 after 200 steps, against 0.96 with 0.01).

    Every other argument is `DPOLoss`'s and applies to the guided DPO term; ``loss_type`` must take summed
    log-probs (``sigmoid``, ``robust``, ``hinge``).

    Logged besides DPO's metrics (of the guided pass): ``loss_components/dpo_loss``,
    ``loss_components/aligned_loss``, ``preference_metrics/pref_advantage_ratio`` (share of pairs with
    ``h_guided > h_plain``) and ``preference_metrics/advantage`` (mean ``h_guided - h_plain``).
    """

    plain_logps = True

    def __init__(self, alpha: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.averaged_logps:
            raise ValueError(
                f"preference-guided DPO compares summed log-probs; loss_type {self.loss_type!r} works on per-token "
                "averages: use sigmoid, robust or hinge"
            )
        self.alpha = alpha

    def forward(self, logps: PreferenceLogps) -> LossOutput:
        if logps.plain_policy_chosen is None or logps.plain_policy_rejected is None:
            raise ValueError(
                "PreferenceGuidedLoss needs the plain policy log-probs: train it with PreferenceGuidedDPOModule"
            )
        dpo = self.per_pair(logps)
        aligned, advantage = consistency_term(
            logps.policy_chosen, logps.policy_rejected, logps.plain_policy_chosen, logps.plain_policy_rejected
        )
        metrics = self.pair_metrics(dpo, logps)
        metrics["loss_components/dpo_loss"] = dpo.losses.detach().mean()
        metrics["loss_components/aligned_loss"] = aligned.detach().mean()
        metrics["preference_metrics/pref_advantage_ratio"] = (advantage > 0).float().mean()
        metrics["preference_metrics/advantage"] = advantage.mean()
        return LossOutput((dpo.losses + self.alpha * aligned).mean(), metrics)
