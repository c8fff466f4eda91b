"""Preference-guided DPO: DPO under a preference instruction, plus a term that moves the preference into the
unguided policy.

With an instruction in the input (a system message, or a learned soft prompt) the policy already leans towards
the preferred answers, so DPO on guided inputs learns from a better-informed policy. At inference there is no
instruction, so a consistency term pulls the unguided policy's preference gap towards the guided one. The
guided side is a target there (stop-gradient): the consistency term must change the unguided policy, not drag
the guided one down to it.

The loss is the DPO loss of ``lit_align.losses.dpo`` on the guided log-probs plus that squared gap; nothing here
knows how the guidance is given.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lit_align.losses.dpo import DPOLossType, dpo_loss


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
    h_guided = guided_policy_chosen_logps - guided_policy_rejected_logps
    h_plain = plain_policy_chosen_logps - plain_policy_rejected_logps
    aligned = (h_plain - h_guided.detach()) ** 2
    return PreferenceGuidedLossOutput(
        losses=dpo.losses + alpha * aligned,
        dpo_losses=dpo.losses,
        aligned_losses=aligned,
        chosen_rewards=dpo.chosen_rewards,
        rejected_rewards=dpo.rejected_rewards,
        advantage=(h_guided - h_plain).detach(),
    )
