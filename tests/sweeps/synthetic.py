"""Run folders as `lit_align fit` leaves them (run.json and TensorBoard event files), written without training."""

from __future__ import annotations

import json
from pathlib import Path


def make_run_dir(run_dir: Path, status: str = "finished", scalars: dict | None = None, seconds: float = 10.0) -> Path:
    """``run_dir`` with a run.json saying ``status`` and, per tag, the ``[(step, value)]`` of ``scalars`` logged."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    if scalars:
        writer = SummaryWriter(str(run_dir))
        for tag, points in scalars.items():
            for step, value in points:
                writer.add_scalar(tag, value, step)
        writer.close()
    record = {"status": status, "seconds": seconds if status == "finished" else None}
    (run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return run_dir
