"""Pure loss functions: per-sequence log-probs in, per-example losses and rewards out."""

from lit_align.losses.dpo import DPOLossOutput, DPOLossType, dpo_loss, preference_metrics
from lit_align.losses.orpo import ORPOLossOutput, orpo_loss

__all__ = ["DPOLossOutput", "DPOLossType", "ORPOLossOutput", "dpo_loss", "orpo_loss", "preference_metrics"]
