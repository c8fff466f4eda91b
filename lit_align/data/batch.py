"""Typed batches: what the collators make and the modules and callbacks read.

A preference batch holds the chosen sequences of its pairs, then the rejected ones, so the module runs both
through the model in one forward. That order is known here and nowhere else: readers ask for ``pairs(values)``
on per-sequence values, or ``chosen()`` / ``rejected()``. Lightning moves dataclass batches to the device field
by field.

Two layouts, one interface. **Padded**: one sequence per row, padded on the right. **Packed** (``data.packing``):
every sequence of the batch end to end in one row, ``position_ids`` restarting at 0 for each, and
``sequence_ids`` saying which sequence each token belongs to; the model sees no attention mask, so transformers
builds attention that never crosses two sequences from the restarting positions (flash-attention's variable-length
kernel on GPU, a block-diagonal causal mask under SDPA or eager). Modules read either through ``model_inputs()``
and ``sequence_sums()`` and never branch on the layout.

A `PromptBatch` (task ``prompt``: GRPO, expert iteration) holds prompts only, padded on the LEFT so every row ends
where generation starts, with the messages and reward fields of each prompt beside the ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lit_align.constants import IGNORE_INDEX


@dataclass
class SequenceBatch:
    """``[rows, T]`` token ids, attention mask (0 on padding) and labels (-100 where no loss is taken).

    Packed batches also carry ``position_ids`` and ``sequence_ids`` (``[rows, T]``; the sequence's number in the
    batch, -1 on padding) and ``num_sequences``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor | None = None
    sequence_ids: torch.Tensor | None = None
    packed_sequences: int | None = None

    @property
    def packed(self) -> bool:
        return self.sequence_ids is not None

    @property
    def num_sequences(self) -> int:
        return self.packed_sequences if self.packed else self.input_ids.shape[0]

    @property
    def num_samples(self) -> int:
        """Training examples in the batch (sequences here; pairs in a `PreferenceBatch`)."""
        return self.num_sequences

    def model_inputs(self) -> dict:
        """The keyword arguments of the model's forward: the attention mask when padded, the restarting positions
        when packed (transformers keeps attention inside each sequence only without a KV cache, so none is made)."""
        if self.packed:
            return {"input_ids": self.input_ids, "position_ids": self.position_ids, "use_cache": False}
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def token_sequence_ids(self) -> torch.Tensor:
        """``[rows, T]``: the sequence each token belongs to, -1 on padding."""
        if self.packed:
            return self.sequence_ids
        rows = torch.arange(self.input_ids.shape[0], device=self.input_ids.device).unsqueeze(1)
        return rows.expand_as(self.input_ids).masked_fill(self.attention_mask == 0, -1)

    def sequence_sums(self, values: torch.Tensor) -> torch.Tensor:
        """Per-sequence sums ``[num_sequences]`` of per-target values ``[rows, T - 1]`` (position ``t`` predicts
        token ``t + 1``, which belongs to ``token_sequence_ids()[:, t + 1]``). Values must be 0 where no target is
        taken: padding, and (packed) the first token of every sequence, which the collator labels -100."""
        if not self.packed:
            return values.sum(-1)
        owners = self.sequence_ids[:, 1:].reshape(-1)
        flat = values.reshape(-1)
        keep = owners >= 0
        sums = flat.new_zeros(self.num_sequences)
        return sums.index_add(0, owners[keep], flat[keep])

    def every_token_labels(self) -> torch.Tensor:
        """Labels that take every real token of every sequence as a target, prompt included (-100 on padding and,
        packed, on each sequence's first token, which nothing before it in the sequence predicts)."""
        if self.packed:
            return self.input_ids.masked_fill((self.sequence_ids < 0) | (self.position_ids == 0), IGNORE_INDEX)
        return self.input_ids.masked_fill(self.attention_mask == 0, IGNORE_INDEX)


@dataclass
class PreferenceBatch(SequenceBatch):
    """``2n`` sequences: ``0..n-1`` are the chosen ones, ``n..2n-1`` the rejected ones, in pair order (rows when
    padded, ``sequence_ids`` when packed).

    ``index`` (``[n]``, the pairs' positions in their split) and ``split`` identify the pairs, so precomputed
    reference log-probs can be looked up; ``guided`` holds the same pairs tokenised with a guidance instruction
    (preference-guided DPO with ``data.guidance_text``).
    """

    index: torch.Tensor | None = None
    split: str | None = None
    guided: PreferenceBatch | None = None

    @property
    def num_pairs(self) -> int:
        return self.num_sequences // 2

    @property
    def num_samples(self) -> int:
        return self.num_pairs

    def pairs(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sequence ``values`` (``[2n, ...]``) split into the chosen and the rejected sequences'."""
        n = self.num_pairs
        return values[:n], values[n:]

    def chosen_tokens(self) -> torch.Tensor:
        """``[rows, T]`` bool: the tokens of chosen sequences."""
        owners = self.token_sequence_ids()
        return (owners >= 0) & (owners < self.num_pairs)

    def chosen(self) -> SequenceBatch:
        """The chosen sequences as a padded batch of their own (padded layout only)."""
        self._check_padded("chosen()")
        return SequenceBatch(*(self.pairs(t)[0] for t in (self.input_ids, self.attention_mask, self.labels)))

    def rejected(self) -> SequenceBatch:
        self._check_padded("rejected()")
        return SequenceBatch(*(self.pairs(t)[1] for t in (self.input_ids, self.attention_mask, self.labels)))

    def _check_padded(self, what: str) -> None:
        if self.packed:
            raise ValueError(f"{what} splits rows; a packed batch holds every sequence in one row")


@dataclass
class PromptBatch:
    """``P`` prompts to sample completions for: ``input_ids`` ``[P, T]`` padded on the left with the pad id,
    ``attention_mask`` ``[P, T]`` (0 on padding), and per prompt its messages (after the system prompt and template),
    its reward ``fields`` (``ground_truth`` and the row's other columns, passed to reward functions as keyword
    arguments) and ``sources`` (``"<source name>:<row>"``, so a reward error can name the record).

    ``index``/``split`` identify the prompts as in a `PreferenceBatch`. The module sets ``completion_tokens`` and
    ``generation_time`` (seconds) after sampling; the throughput callback reads them.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompts: list[list[dict]]
    fields: list[dict]
    sources: list[str]
    index: torch.Tensor | None = None
    split: str | None = None
    completion_tokens: int = 0
    generation_time: float = 0.0

    @property
    def num_sequences(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_samples(self) -> int:
        """Prompts in the batch."""
        return self.num_sequences
