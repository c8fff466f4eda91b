"""Math answer checking shared by evaluation and RL rewards: extraction, normalisation, equivalence, pass@k.

Torch-free on purpose: lm-eval task utilities and reward workers import it without loading a model stack.
"""

from lit_align.rewards.answers import extract_answer, normalize_answer, reference_answer
from lit_align.rewards.equivalence import answers_match
from lit_align.rewards.math_rewards import answer_reward, format_reward
from lit_align.rewards.pass_at_k import pass_at_k

__all__ = [
    "answer_reward",
    "answers_match",
    "extract_answer",
    "format_reward",
    "normalize_answer",
    "pass_at_k",
    "reference_answer",
]
