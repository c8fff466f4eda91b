"""Read scalars back from a run's TensorBoard event files (for tests, plots and closing notes)."""

from __future__ import annotations

from pathlib import Path


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` for every scalar in the event files under ``log_dir``, by step.

    The folder is read as one run, as TensorBoard reads it: a resumed run that continues in its folder writes a
    second event file whose purge step drops what the first logged after the checkpoint, so each step appears
    once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: sorted((e.step, e.value) for e in accumulator.Scalars(tag)) for tag in accumulator.Tags()["scalars"]}
