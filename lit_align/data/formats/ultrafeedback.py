"""UltraFeedback binarized rows (HuggingFaceH4 schema): a TRL preference row plus ``score_chosen``/``score_rejected``.

The scores are the mean GPT-4 ratings of the two completions. A pair whose gap is small carries little
signal and much label noise, so `min_score_gap` drops pairs below it, and ties are dropped by default
(``drop_ties``): a tie says neither answer is better, and DPO would still push one up and the other down.
Drops are `SkipRecord` reasons the reader counts (``score_tie``, ``score_gap_below_min``), never errors.
"""

from __future__ import annotations

from lit_align.data.errors import SkipRecord
from lit_align.data.formats import preference
from lit_align.data.formats._fields import number


def convert(row: dict, *, min_score_gap: float = 0.0, drop_ties: bool = True) -> list[dict]:
    """Return one preference record, or raise SkipRecord for a tie or a gap below `min_score_gap`."""
    gap = number(row, "score_chosen") - number(row, "score_rejected")
    records = preference.convert(row)
    if gap == 0 and drop_ties:
        raise SkipRecord("score_tie")
    if gap < min_score_gap:
        raise SkipRecord("score_gap_below_min")
    return records
