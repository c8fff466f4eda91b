"""What RL training does between two optimizer steps besides the loss: sample completions, then score them.

Import-light on purpose: the optional vLLM backend lives in `lit_align.rollouts.vllm_colocate` and is imported
only by a run that sets ``use_vllm: true``, so a machine without vLLM (or without a GPU) imports this package.
"""

from lit_align.rollouts.rewards import RewardError, RewardFunctions, RewardScores
from lit_align.rollouts.sampling import SamplingSettings

__all__ = ["RewardError", "RewardFunctions", "RewardScores", "SamplingSettings"]
