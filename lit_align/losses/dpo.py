"""The DPO loss family as pure functions of per-sequence log-probabilities.

Nothing here knows about models, tokenizers, devices or logging: a loss takes the log-probs the module
computed and returns per-example losses and implicit rewards. That keeps every formula testable with
hand-picked numbers and lets a new loss be written without touching the training loop.

References:
- DPO: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward Model".
- Conservative DPO (label smoothing): the DPO authors' code and Mitchell 2023, "A note on DPO with noisy
  preferences".
- IPO: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences".
- Hinge: the SLiC-HF calibration loss (Zhao et al. 2023) applied to the DPO log-ratio.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

DPOLossType = Literal["sigmoid", "ipo", "hinge"]


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
) -> DPOLossOutput:
    """Per-example DPO losses and implicit rewards.

    With ``h = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)``:

    - ``sigmoid``: ``-(1 - eps) * logsigmoid(beta * h) - eps * logsigmoid(-beta * h)``. ``eps`` is
      ``label_smoothing``, the probability that a label is flipped (conservative DPO, as in the DPO authors'
      code). Current TRL's ``sigmoid`` ignores ``label_smoothing``: with ``eps > 0`` our curves differ from
      a TRL run by design; with ``eps = 0`` they are the same loss.
    - ``ipo``: ``(h - 1 / (2 * beta)) ** 2``. The IPO paper's results use log-probs averaged over the
      completion's tokens; the caller passes those (``DPOModule`` does when ``loss_type="ipo"``).
    - ``hinge``: ``relu(1 - beta * h)``.

    Rewards are ``beta * (policy - reference)`` per completion, detached: they are metrics, not targets.

    Example (sigmoid, beta=0.5, eps=0): policy logps chosen -1, rejected -3; reference -2 and -2.
    h = (-1 + 2) - (-3 + 2) = 2, so loss = -logsigmoid(1) = log(1 + e^-1) = 0.3133; rewards 0.5 and -0.5.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    h = chosen_logratios - rejected_logratios

    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of sigmoid, ipo, hinge")

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
