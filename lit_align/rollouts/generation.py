"""Sampling completions with Hugging Face ``generate`` and laying them out for the training forward.

The default backend on CPU and GPU: the policy itself, in eval mode (no dropout), without gradients, with a KV
cache, on the prompts of one `PromptBatch` repeated ``n`` times each. A completion ends at its first end-of-turn
token, which is kept (the model is trained to stop); one that has not ended after ``max_completion_length``
tokens is *truncated*.

`completion_batch` then puts every prompt, unpadded, before each of its completions, one sequence per row padded
on the right, and labels the completion tokens alone: the same `SequenceBatch` every other module trains on, so
log-probs come from `AlignModule.label_logps` (chunked head, no full logits) and line up position by position in
the policy, old-policy and reference passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig

from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import PromptBatch, SequenceBatch
from lit_align.data.collate import pad_batch
from lit_align.rollouts.sampling import SamplingSettings


@dataclass
class Completions:
    """``n`` completions per prompt, grouped by prompt (all of prompt 0's first)."""

    ids: list[list[int]]
    """Token ids of each completion, its end-of-turn token included when it has one."""
    truncated: list[bool]
    """Did not end within ``max_completion_length`` tokens."""
    group_size: int

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]


def prompt_rows(batch: PromptBatch) -> list[list[int]]:
    """The batch's prompts as unpadded token-id lists (its rows are padded on the left)."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True)]


def trim_completions(generated: torch.Tensor, eos_ids: list[int]) -> tuple[list[list[int]], list[bool]]:
    """``generate``'s new tokens ``[N, T]`` to per-row lists cut after the first end-of-turn id; a row without one
    is truncated and kept whole: ``generate`` writes pad ids only after a row has ended, so a pad id in such a row
    was sampled (the pad token is often ``<|endoftext|>``, which models do write) and belongs to the completion."""
    rows, truncated = [], []
    for row in generated.tolist():
        end = next((i for i, token in enumerate(row) if token in eos_ids), None)
        if end is None:
            rows.append(row)
            truncated.append(True)
        else:
            rows.append(row[: end + 1])
            truncated.append(False)
    return rows, truncated


@torch.no_grad()
def generate_completions(
    policy: nn.Module,
    batch: PromptBatch,
    n: int,
    sampling: SamplingSettings,
    eos_ids: list[int],
    pad_id: int,
    greedy: bool = False,
) -> Completions:
    """``n`` completions of each prompt in ``batch`` from ``policy.generate`` (sampled with ``sampling``, or greedy).
    The caller puts the policy in eval mode (`lit_align.models.eval_mode.policy_in_eval_mode`)."""
    input_ids = batch.input_ids.repeat_interleave(n, dim=0)
    attention_mask = batch.attention_mask.repeat_interleave(n, dim=0)
    config = GenerationConfig(
        max_new_tokens=sampling.max_completion_length,
        do_sample=not greedy,
        temperature=sampling.temperature if not greedy else None,
        top_p=sampling.top_p if not greedy else None,
        top_k=sampling.top_k if not greedy else None,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
        use_cache=True,  # training configs may turn the cache off (gradient checkpointing)
    )
    with plain_generation_defaults(policy):
        out = policy.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    ids, truncated = trim_completions(out[:, input_ids.shape[1] :], eos_ids)
    return Completions(ids, truncated, n)


@contextmanager
def plain_generation_defaults(policy: nn.Module) -> Iterator[None]:
    """Sample from the model's own distribution: transformers fills every option a call leaves unset from the
    model's ``generation_config.json``, and a hub model's file (Qwen2.5's: top_k 20, top_p 0.8, repetition penalty
    1.05) would change what is sampled, so that the loss's log-probs, which are the model's own, would no longer
    describe the samples. Inside this block the model's defaults are transformers' global ones."""
    model = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def completion_batch(prompts: list[list[int]], completions: Completions, pad_id: int) -> SequenceBatch:
    """Prompt + completion per row (each prompt repeated for its group), right-padded, labels on the completion."""
    n = completions.group_size
    rows, labels = [], []
    for i, completion in enumerate(completions.ids):
        prompt = prompts[i // n]
        rows.append(prompt + completion)
        labels.append([IGNORE_INDEX] * len(prompt) + completion)
    return SequenceBatch(**pad_batch(rows, labels, pad_id))
