"""Reward functions in TRL's batch shape: what a GRPO or expert-iteration recipe names in ``reward_funcs``.

A recipe lists import paths (``lit_align.rewards.reward_funcs.answer_reward``), so the names and the calling
convention are TRL's: someone moving a ``GRPOTrainer`` setup here keeps their reward functions, and the metric
names (``rewards/answer_reward/mean``) match their curves. Each function scores a whole batch in one call, which
lets a function batch its own work (a reward model, a sandbox) instead of being called once per completion.

A reward function of your own is any importable callable with this shape:

- keyword arguments ``prompts`` (one message list per completion, ``[{"role": "user", "content": ...}]``) and
  ``completions`` (one plain string per completion: the decoded text of the completion alone). Unlike TRL with
  a conversational dataset, a completion is never a message list here;
- every other dataset column of the record arrives as a keyword list, one value per completion (``None`` where
  a record lacks that column), so ``ground_truth`` is a list of strings. Take ``**kwargs`` so that columns and
  extra arguments you do not use are accepted;
- it returns one value per completion: a finite number, or ``None`` where the function does not apply to that
  record (no ground truth, another task). ``None`` is left out of the weighted sum, not counted as 0.

For example, a reward for short completions, weighted beside the answer with ``reward_weights: [1.0, 0.1]``::

    def brevity_reward(prompts, completions, **kwargs):
        return [max(0.0, 1.0 - len(text) / 2000) for text in completions]

and named in the recipe as ``reward_funcs: [lit_align.rewards.reward_funcs.answer_reward, my_rewards.brevity_reward]``.
"""

from __future__ import annotations

from lit_align.rewards import math_rewards


def answer_reward(
    prompts: list[list[dict]], completions: list[str], ground_truth: list[str | None], **kwargs
) -> list[float | None]:
    """1.0 per completion whose final answer equals its record's ``ground_truth`` (a bare answer, or a gsm8k
    solution ending ``#### 18``), else 0.0; ``None`` where the record has no ground truth (``None`` or blank),
    so a mixed dataset's open-ended records are not scored as wrong. Same verifier as evaluation."""
    return [
        None if truth is None or not str(truth).strip() else math_rewards.answer_reward(completion, str(truth))
        for completion, truth in zip(completions, ground_truth, strict=True)
    ]


def format_reward(prompts: list[list[dict]], completions: list[str], **kwargs) -> list[float]:
    """1.0 per completion laid out as ``<think>...</think><answer>...</answer>`` (DeepSeek-R1), else 0.0."""
    return [math_rewards.format_reward(completion) for completion in completions]
