"""LightningModules, one per algorithm; ``model.class_path`` in a recipe names one of them."""

from lit_align.modules.base import AlignModule
from lit_align.modules.dpo import DPOModule, PreferenceLogps
from lit_align.modules.sft import SFTModule

__all__ = ["AlignModule", "DPOModule", "PreferenceLogps", "SFTModule"]
