"""Tokenised examples into batches: padded, or packed (padding-free).

Padding is on the right with the tokenizer's pad id, attention mask 0 and label -100, so padded positions
carry neither attention nor loss. Packing (``data.packing``) puts every sequence of the batch end to end in one
row, with positions restarting at 0 for each; each sequence's first token gets label -100, as it has in a padded
row, where nothing predicts it. A preference batch holds all chosen sequences, then all rejected ones: the module
runs them through the model in a single forward (see `lit_align.data.batch`). Prompts for generation (task
``prompt``) are padded on the left instead, so that every row ends where the completion starts.
"""

from __future__ import annotations

import torch

from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import PreferenceBatch, PromptBatch, SequenceBatch
from lit_align.models.generation_inputs import left_pad


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


def pack_batch(
    input_ids: list[list[int]], labels: list[list[int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> dict:
    """Every sequence end to end in one row: ``input_ids``, ``attention_mask``, ``labels``, ``position_ids``,
    ``sequence_ids`` (``[1, total]``) and ``packed_sequences``. With ``pad_to_multiple_of`` the row ends in
    padding (sequence id -1, its own positions from 0, so it attends to nothing real)."""
    total = sum(len(ids) for ids in input_ids)
    padding = _padded_length([total], pad_to_multiple_of) - total
    flat_ids, flat_labels, positions, owners = [], [], [], []
    for number, (ids, row_labels) in enumerate(zip(input_ids, labels, strict=True)):
        flat_ids += ids
        flat_labels += [IGNORE_INDEX] + row_labels[1:]
        positions += range(len(ids))
        owners += [number] * len(ids)
    return {
        "input_ids": torch.tensor([flat_ids + [pad_token_id] * padding]),
        "attention_mask": torch.tensor([[1] * total + [0] * padding]),
        "labels": torch.tensor([flat_labels + [IGNORE_INDEX] * padding]),
        "position_ids": torch.tensor([positions + list(range(padding))]),
        "sequence_ids": torch.tensor([owners + [-1] * padding]),
        "packed_sequences": len(input_ids),
    }


def identity(examples: list[dict]) -> tuple[torch.Tensor, str]:
    """``index`` (LongTensor ``[n]``, in example order) and the one ``split`` of examples the data module numbered."""
    splits = {e["split"] for e in examples}
    if len(splits) != 1:
        raise ValueError(f"a batch mixes examples of several splits: {sorted(splits)}")
    return torch.tensor([e["index"] for e in examples], dtype=torch.long), splits.pop()


class SFTCollator:
    """Examples ``{"input_ids", "labels"}`` to a `SequenceBatch`, padded or (``packing``) packed."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, packing: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.packing = packing

    def _layout(self, input_ids: list[list[int]], labels: list[list[int]]) -> dict:
        layout = pack_batch if self.packing else pad_batch
        return layout(input_ids, labels, self.pad_token_id, self.pad_to_multiple_of)

    def __call__(self, examples: list[dict]) -> SequenceBatch:
        return SequenceBatch(**self._layout([e["input_ids"] for e in examples], [e["labels"] for e in examples]))


class PreferenceCollator(SFTCollator):
    """Pairs ``{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"}`` to a
    `PreferenceBatch` of ``2 * n`` sequences: the chosen ones, then the rejected ones, in pair order.

    Examples that also hold ``guided_chosen_input_ids`` etc. (``data.guidance_text``) add ``guided``, a
    `PreferenceBatch` of the guided pairs, padded to their own length or packed.

    Examples that carry their identity (``index`` in their split's example list and ``split``, as the data module
    gives them) add ``index``, a LongTensor ``[n]`` in pair order, and ``split``: the module looks up
    precomputed reference log-probs with them."""

    def __call__(self, examples: list[dict]) -> PreferenceBatch:
        batch = self._pairs(examples, "")
        if "guided_chosen_input_ids" in examples[0]:
            batch.guided = self._pairs(examples, "guided_")
        if "index" in examples[0]:
            batch.index, batch.split = identity(examples)
            if batch.guided is not None:
                batch.guided.index, batch.guided.split = batch.index, batch.split
        return batch

    def _pairs(self, examples: list[dict], prefix: str) -> PreferenceBatch:
        ids = [e[f"{prefix}chosen_input_ids"] for e in examples] + [e[f"{prefix}rejected_input_ids"] for e in examples]
        labels = [e[f"{prefix}chosen_labels"] for e in examples] + [e[f"{prefix}rejected_labels"] for e in examples]
        return PreferenceBatch(**self._layout(ids, labels))


class PromptCollator:
    """Prompt examples ``{"prompt_input_ids", "prompt", "fields", "source", "row"}`` to a `PromptBatch`, padded on
    the left; examples that carry ``index``/``split`` (as the data module gives them) add those too."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> PromptBatch:
        input_ids, attention_mask = left_pad([e["prompt_input_ids"] for e in examples], self.pad_token_id)
        batch = PromptBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            prompts=[e["prompt"] for e in examples],
            fields=[e["fields"] for e in examples],
            sources=[_where(e) for e in examples],
        )
        if "index" in examples[0]:
            batch.index, batch.split = identity(examples)
        return batch


def _where(example: dict) -> str:
    source = example.get("source", "?")
    return source if example.get("row") is None else f"{source}:{example['row']}"
