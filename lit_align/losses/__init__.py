"""Losses: small ``nn.Module``s from log-probs to a loss and metrics, and the formulas they evaluate as pure
functions. Preference losses take one `PreferenceLogps`; the GRPO family (`GRPOLoss`) takes one `RolloutLogps`.
A recipe names a loss under ``model.init_args.loss``."""

from lit_align.losses.base import LossOutput, PreferenceLoss
from lit_align.losses.beta_dpo import BetaDPOLoss
from lit_align.losses.beta_fusion import FusionBeta
from lit_align.losses.beta_rules import BatchAdaptiveBeta, BetaDecision, BetaRule, FixedBeta, LearnableBeta, MarginBeta
from lit_align.losses.dpo import DPOLoss, DPOLossOutput, DPOLossType, dpo_loss, preference_metrics
from lit_align.losses.grpo import (
    GRPOLoss,
    GRPOLossType,
    RolloutLogps,
    ScaleRewards,
    aggregate_tokens,
    clip_fractions,
    clipped_surrogate,
    group_advantages,
    k3_kl,
)
from lit_align.losses.logps import PreferenceLogps
from lit_align.losses.orpo import ORPOLoss, ORPOLossOutput, orpo_loss
from lit_align.losses.preference_guided import PreferenceGuidedLoss

__all__ = [
    "BatchAdaptiveBeta",
    "BetaDPOLoss",
    "BetaDecision",
    "BetaRule",
    "DPOLoss",
    "DPOLossOutput",
    "DPOLossType",
    "FixedBeta",
    "FusionBeta",
    "GRPOLoss",
    "GRPOLossType",
    "LearnableBeta",
    "LossOutput",
    "MarginBeta",
    "ORPOLoss",
    "ORPOLossOutput",
    "PreferenceGuidedLoss",
    "PreferenceLogps",
    "PreferenceLoss",
    "RolloutLogps",
    "ScaleRewards",
    "aggregate_tokens",
    "clip_fractions",
    "clipped_surrogate",
    "dpo_loss",
    "group_advantages",
    "k3_kl",
    "orpo_loss",
    "preference_metrics",
]
