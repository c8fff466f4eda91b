"""Pure loss functions: per-sequence log-probs in, per-example losses and rewards out."""

from lit_align.losses.dpo import DPOLossOutput, DPOLossType, dpo_loss, preference_metrics

__all__ = ["DPOLossOutput", "DPOLossType", "dpo_loss", "preference_metrics"]
