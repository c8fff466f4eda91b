"""Read back what each run of a sweep logged: its status and time (run.json), and per metric its final and best
value and curve (TensorBoard event files).

"Final" is the last value the run logged, the number a fixed budget gives; "best" is the minimum or maximum over
the run, what early stopping at the right moment would give (optimistic: the moment is chosen on the same data).
Which of min or max is best is guessed from the name (losses, NLL, perplexity and KL go down) unless the metric
says ``:min`` or ``:max``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lit_align.sweeps.grid import SweepError
from lit_align.sweeps.plan import PlannedRun
from lit_align.sweeps.runner import FINISHED, read_run_record, run_status
from lit_align.tensorboard import read_scalars

LOWER_IS_BETTER = ("loss", "nll", "perplexity", "kl")

Curve = list[tuple[int, float]]


@dataclass(frozen=True)
class Metric:
    name: str
    mode: str  # "min" or "max": which end is best

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.mode}"


def parse_metrics(text: str) -> list[Metric]:
    """``val/loss,val/rewards/accuracies:max`` as metrics; without a suffix, min when the name contains loss, nll,
    perplexity or kl, else max."""
    metrics = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, mode = part.rpartition(":")
        if not sep or mode not in ("min", "max"):
            if sep and mode and "/" not in mode:
                raise SweepError(f"--metrics {text!r}: {part!r} ends in :{mode}; use :min or :max")
            name, mode = part, "min" if any(word in part.lower() for word in LOWER_IS_BETTER) else "max"
        metrics.append(Metric(name, mode))
    if not metrics:
        raise SweepError(f"--metrics {text!r}: no metric named (e.g. val/loss,val/rewards/accuracies)")
    return metrics


@dataclass
class RunResult:
    """One planned run as the reports see it; ``final``, ``best`` and ``curves`` only for finished runs."""

    run: PlannedRun
    status: str
    seconds: float | None = None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


def collect_run(run: PlannedRun, metrics: list[Metric]) -> RunResult:
    status = run_status(run.run_dir)
    record = read_run_record(run.run_dir) or {}
    seconds = record.get("seconds")
    result = RunResult(run, status, float(seconds) if isinstance(seconds, (int, float)) else None)
    if not result.finished:
        return result
    scalars = read_scalars(run.run_dir)
    for metric in metrics:
        curve = scalars.get(metric.name)
        if not curve:
            continue
        values = [value for _, value in curve]
        result.curves[metric.name] = curve
        result.final[metric.name] = values[-1]
        result.best[metric.name] = min(values) if metric.mode == "min" else max(values)
    return result


def collect(runs: list[PlannedRun], metrics: list[Metric]) -> tuple[list[RunResult], list[str]]:
    """Every run's result, and one warning line per metric that some finished runs did not log."""
    results = [collect_run(run, metrics) for run in runs]
    warnings = []
    for metric in metrics:
        missing = [r.run.name for r in results if r.finished and metric.name not in r.final]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            warnings.append(f"warning: {metric.name} was not logged by {len(missing)} finished run(s): {shown}")
    return results, warnings
