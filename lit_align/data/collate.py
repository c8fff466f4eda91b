"""Pad tokenised examples into batches.

Padding is on the right with the tokenizer's pad id, attention mask 0 and label -100, so padded positions
carry neither attention nor loss. A preference batch stacks all chosen sequences, then all rejected ones,
padded to one length: the module runs them through the model in a single forward (see `lit_align.data.batch`).
"""

from __future__ import annotations

import torch

from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import PreferenceBatch, SequenceBatch


def _pad(rows: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long)


def _padded_length(lengths: list[int], multiple: int | None) -> int:
    longest = max(lengths)
    if multiple:
        longest = -(-longest // multiple) * multiple
    return longest


def pad_batch(
    input_ids: list[list[int]], labels: list[list[int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` padded on the right to the longest row."""
    length = _padded_length([len(ids) for ids in input_ids], pad_to_multiple_of)
    return {
        "input_ids": _pad(input_ids, pad_token_id, length),
        "attention_mask": _pad([[1] * len(ids) for ids in input_ids], 0, length),
        "labels": _pad(labels, IGNORE_INDEX, length),
    }


class SFTCollator:
    """Examples ``{"input_ids", "labels"}`` to a padded `SequenceBatch`."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: list[dict]) -> SequenceBatch:
        ids, labels = [e["input_ids"] for e in examples], [e["labels"] for e in examples]
        return SequenceBatch(**pad_batch(ids, labels, self.pad_token_id, self.pad_to_multiple_of))


class PreferenceCollator(SFTCollator):
    """Pairs ``{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}`` to a
    `PreferenceBatch` of ``2 * n`` rows: the chosen sequences, then the rejected ones, in pair order.

    Examples that also hold ``guided_chosen_input_ids`` etc. (``data.guidance_text``) add ``guided``, a
    `PreferenceBatch` of the guided pairs padded to their own length.

    Examples that carry their identity (``index`` in their split's example list and ``split``, as the data module
    gives them) add ``index``, a LongTensor ``[n]`` in pair order, and ``split``: the module looks up
    precomputed reference log-probs with them."""

    def __call__(self, examples: list[dict]) -> PreferenceBatch:
        batch = self._pairs(examples, "")
        if "guided_chosen_input_ids" in examples[0]:
            batch.guided = self._pairs(examples, "guided_")
        if "index" in examples[0]:
            splits = {e["split"] for e in examples}
            if len(splits) != 1:
                raise ValueError(f"a batch mixes examples of several splits: {sorted(splits)}")
            batch.index = torch.tensor([e["index"] for e in examples], dtype=torch.long)
            batch.split = splits.pop()
            if batch.guided is not None:
                batch.guided.index, batch.guided.split = batch.index, batch.split
        return batch

    def _pairs(self, examples: list[dict], prefix: str) -> PreferenceBatch:
        ids = [e[f"{prefix}chosen_input_ids"] for e in examples] + [e[f"{prefix}rejected_input_ids"] for e in examples]
        labels = [e[f"{prefix}chosen_labels"] for e in examples] + [e[f"{prefix}rejected_labels"] for e in examples]
        return PreferenceBatch(**pad_batch(ids, labels, self.pad_token_id, self.pad_to_multiple_of))
