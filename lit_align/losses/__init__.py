"""Preference losses: small ``nn.Module``s from one `PreferenceLogps` to a loss and metrics, and the formulas
they evaluate as pure functions. A recipe names a loss under ``model.init_args.loss``."""

from lit_align.losses.base import LossOutput, PreferenceLoss
from lit_align.losses.beta_dpo import BetaDPOLoss
from lit_align.losses.dpo import DPOLoss, DPOLossOutput, DPOLossType, dpo_loss, preference_metrics
from lit_align.losses.logps import PreferenceLogps
from lit_align.losses.orpo import ORPOLoss, ORPOLossOutput, orpo_loss
from lit_align.losses.preference_guided import PreferenceGuidedLoss

__all__ = [
    "BetaDPOLoss",
    "DPOLoss",
    "DPOLossOutput",
    "DPOLossType",
    "LossOutput",
    "ORPOLoss",
    "ORPOLossOutput",
    "PreferenceGuidedLoss",
    "PreferenceLogps",
    "PreferenceLoss",
    "dpo_loss",
    "orpo_loss",
    "preference_metrics",
]
