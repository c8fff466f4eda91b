"""Curriculum stages for `LengthBucketBatchSampler`: which sources and length buckets feed which batches.

A run often starts on short examples, or on one clean source, and widens later. The schedule is written in
batches of the sampler's global plan (one plan shared by all ranks), not in optimizer steps, so it does not move
when gradient accumulation, the learning-rate schedule or the optimizer changes. The sampler asks `stage_at` once
per planned batch; the function is pure, so a schedule can be checked by hand without building a sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class CurriculumStage:
    """One stage of a curriculum; stages apply in order and the last one runs to the end of training."""

    until: float | int
    """Where the stage ends. An int ``N >= 1`` is a batch index of the global plan (all ranks together: with 2
    ranks, batch 100 is each rank's 50th) counted from the start of training across epochs: the stage covers
    batches ``< N``. A float in ``(0, 1]`` is a fraction of one epoch's batches: ``0.25`` ends at
    ``0.25 * batches_per_epoch``, again counted from the start of training, so a curriculum runs once, not once
    per epoch. Note ``1`` (the first batch) and ``1.0`` (the first epoch) differ."""
    source_weights: dict[str, float] | None = None
    """Relative weight per source during the stage; unlisted sources get 0. ``None``: the sampler's own
    ``source_weights``."""
    bucket_weights: dict[int | str, float] | None = None
    """Relative share of batches per length bucket, keyed by the bucket's upper bound (``{256: 1.0}`` keeps to
    the shortest bucket of the default bounds); unlisted buckets get 0. ``None``: each bucket in proportion to its
    (source-weighted) number of examples."""

    def __post_init__(self) -> None:
        if isinstance(self.until, bool) or not isinstance(self.until, (int, float)):
            raise TypeError(f"CurriculumStage.until must be an int or a float, got {self.until!r}")
        if isinstance(self.until, int) and self.until < 1:
            raise ValueError(f"CurriculumStage.until as a batch index must be >= 1, got {self.until}")
        if isinstance(self.until, float) and not 0.0 < self.until <= 1.0:
            raise ValueError(f"CurriculumStage.until as an epoch fraction must lie in (0, 1], got {self.until}")


def stage_end(stage: CurriculumStage, total_batches: int) -> float:
    """First batch index past ``stage``: ``until`` for an int, ``until * total_batches`` for a float."""
    return float(stage.until) if isinstance(stage.until, int) else stage.until * total_batches


def stage_at(stages: Sequence[CurriculumStage], batch_index: int, total_batches: int) -> CurriculumStage:
    """The stage that covers ``batch_index`` (0-based, counted from the start of training).

    Stage ``i`` covers ``stage_end(i - 1) <= batch_index < stage_end(i)``, with ``stage_end(-1) = 0``; the last
    stage covers everything after the one before it. ``total_batches`` is the number of batches in one epoch and
    only converts float ``until`` values to batch indices.
    """
    if not stages:
        raise ValueError("a curriculum needs at least one stage")
    ends = [stage_end(stage, total_batches) for stage in stages[:-1]]
    if any(later < earlier for earlier, later in zip(ends, ends[1:], strict=False)):
        raise ValueError(
            f"curriculum stages must end in order; with {total_batches} batches per epoch they end at {ends}"
        )
    for stage, end in zip(stages, ends, strict=False):
        if batch_index < end:
            return stage
    return stages[-1]
