"""Stanford Human Preferences (SHP) rows: a Reddit post and two top-level comments ranked by upvotes.

``history`` is the post, ``human_ref_A``/``human_ref_B`` the comments, ``labels`` is 1 when A is preferred.
The SHP authors recommend training only on pairs whose preferred comment has at least twice the score of
the other (``score_ratio >= 2``) because small ratios are mostly noise from posting time; `min_score_ratio`
applies that filter (off by default so the reader does not silently change the dataset's size).
When ``score_ratio`` is missing it is computed as preferred score / other score.
"""

from __future__ import annotations

from lit_align.data.errors import FieldError, SkipRecord
from lit_align.data.formats._fields import message, number, preference_record, require


def convert(row: dict, *, min_score_ratio: float | None = None) -> list[dict]:
    """Return one preference record, or raise SkipRecord when the score ratio is below `min_score_ratio`."""
    post = require(row, "history", str)
    comment_a = require(row, "human_ref_A", str)
    comment_b = require(row, "human_ref_B", str)
    label = require(row, "labels", int)
    if label not in (0, 1):
        raise FieldError("labels", f"expected 0 or 1, got {label}")
    chosen, rejected = (comment_a, comment_b) if label == 1 else (comment_b, comment_a)
    if min_score_ratio is not None and _score_ratio(row, label) < min_score_ratio:
        raise SkipRecord("score_ratio_below_min")
    names = ("human_ref_A", "human_ref_B") if label == 1 else ("human_ref_B", "human_ref_A")
    completions = [message("assistant", chosen)], [message("assistant", rejected)]
    return [preference_record([message("user", post)], *completions, ("history", *names))]


def _score_ratio(row: dict, label: int) -> float:
    if row.get("score_ratio") is not None:
        return number(row, "score_ratio")
    score_a, score_b = number(row, "score_A"), number(row, "score_B")
    preferred, other = (score_a, score_b) if label == 1 else (score_b, score_a)
    return float("inf") if other <= 0 else preferred / other
