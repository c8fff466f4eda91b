"""LightningModules: ``SFTModule`` for chat data, ``PreferenceModule`` for any pairwise loss (``loss:`` in YAML),
``PreferenceGuidedDPOModule``, whose forward pass adds guidance, and ``GRPOModule`` and ``ExpertIterationModule``,
which learn from their own sampled completions of prompts with verifiable answers. ``model.class_path`` in a recipe
names one."""

from lit_align.modules.base import AlignModule
from lit_align.modules.expert_iteration import ExpertIterationModule
from lit_align.modules.grpo import GRPOModule
from lit_align.modules.preference import PreferenceModule
from lit_align.modules.preference_guided import PreferenceGuidedDPOModule
from lit_align.modules.sft import SFTModule

__all__ = [
    "AlignModule",
    "ExpertIterationModule",
    "GRPOModule",
    "PreferenceGuidedDPOModule",
    "PreferenceModule",
    "SFTModule",
]

_RENAMED = {
    "DPOModule": "lit_align.modules.PreferenceModule (DPO is its default loss, lit_align.losses.DPOLoss)",
    "ORPOModule": "lit_align.modules.PreferenceModule with loss: lit_align.losses.ORPOLoss",
    "BetaDPOModule": "lit_align.modules.PreferenceModule with loss: lit_align.losses.BetaDPOLoss",
    "PreferenceLogps": "lit_align.losses.PreferenceLogps",
}


def __getattr__(name: str):
    # Recipes and checkpoints' config.yaml from before losses were objects name these: say where they went.
    if name in _RENAMED:
        raise AttributeError(f"lit_align.modules.{name} is now {_RENAMED[name]}; see README, 'Add an algorithm'")
    raise AttributeError(f"module 'lit_align.modules' has no attribute {name!r}")
