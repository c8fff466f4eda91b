"""Typed batches: what the collators make and the modules and callbacks read.

A preference batch stacks the chosen sequences of its pairs, then the rejected ones, so the module runs both
through the model in one forward. That layout is known here and nowhere else: readers ask for ``chosen()``,
``rejected()`` or ``pairs(values)``. Lightning moves dataclass batches to the device field by field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceBatch:
    """Right-padded token sequences: ``[rows, T]`` ids, attention mask (0 on padding) and labels (-100 where no
    loss is taken)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def num_samples(self) -> int:
        """Training examples in the batch (sequences here; pairs in a `PreferenceBatch`)."""
        return self.input_ids.shape[0]


@dataclass
class PreferenceBatch(SequenceBatch):
    """``2n`` rows: rows ``0..n-1`` are the chosen sequences, rows ``n..2n-1`` the rejected ones, in pair order.

    ``index`` (``[n]``, the pairs' positions in their split) and ``split`` identify the pairs, so precomputed
    reference log-probs can be looked up; ``guided`` holds the same pairs tokenised with a guidance instruction
    (preference-guided DPO with ``data.guidance_text``).
    """

    index: torch.Tensor | None = None
    split: str | None = None
    guided: PreferenceBatch | None = None

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    @property
    def num_samples(self) -> int:
        return self.num_pairs

    def pairs(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-row ``values`` (``[2n, ...]``) split into the chosen rows and the rejected rows."""
        n = self.num_pairs
        return values[:n], values[n:]

    def chosen(self) -> SequenceBatch:
        return SequenceBatch(*(self.pairs(t)[0] for t in (self.input_ids, self.attention_mask, self.labels)))

    def rejected(self) -> SequenceBatch:
        return SequenceBatch(*(self.pairs(t)[1] for t in (self.input_ids, self.attention_mask, self.labels)))
