"""Rewards for math answers, for GRPO-style training: a completion scores 1.0 or 0.0.

``answer_reward`` checks the result with the same extraction and verifier as evaluation
(`lit_align.rewards.equivalence`), so a policy is rewarded for exactly what it will be measured on.
``format_reward`` checks the DeepSeek-R1 layout, ``<think>`` reasoning then an ``<answer>``, which keeps the
final answer easy to find; it says nothing about whether the answer is right. Both are plain functions of
strings, with no tokenizer or torch, so they can run in data-loader workers or a separate process.
"""

from __future__ import annotations

import re

from lit_align.rewards.answers import extract_answer, reference_answer
from lit_align.rewards.equivalence import answers_match

_FORMAT = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def answer_reward(completion: str, ground_truth: str, use_math_verify: bool | None = None) -> float:
    """1.0 when the answer extracted from ``completion`` equals the reference answer of ``ground_truth`` (a bare
    answer or a full gsm8k solution ending ``#### N``), else 0.0. See `answers_match` for ``use_math_verify``."""
    predicted = extract_answer(completion)
    return 1.0 if answers_match(predicted, reference_answer(ground_truth), use_math_verify) else 0.0


def format_reward(completion: str) -> float:
    """1.0 when ``completion`` is ``<think>...</think>`` then ``<answer>...</answer>``, each tag exactly once and
    nothing but whitespace around or between them, else 0.0. Empty tags still count: content is
    `answer_reward`'s business."""
    if any(completion.count(tag) != 1 for tag in _TAGS):
        return 0.0
    return 1.0 if _FORMAT.fullmatch(completion) else 0.0
