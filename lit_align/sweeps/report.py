"""The sweep's tables: ``sweep.csv`` (one row per run), ``summary.csv`` and ``summary.md`` (one row per setting).

Statistics use finished runs only: a failed run is listed in sweep.csv with its status and left out of n, so a
setting that failed twice out of three shows n = 1 rather than an average over what happened to survive unnoticed.
The interval is over seeds of the final values: it says how much the result moves with the seed at this budget,
not how good the method is in general.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lit_align.sweeps.collect import Metric, RunResult
from lit_align.sweeps.grid import Axis, Setting
from lit_align.sweeps.stats import Summary, summarize


def number(value: float | None, scale: float | None = None) -> str:
    """Three decimals, or scientific notation when ``scale`` (the cell's mean; default the value) is below 0.01 and
    not zero, so that the numbers of one cell share a format; blank for None."""
    if value is None:
        return ""
    scale = value if scale is None else scale
    return f"{value:.2e}" if 0 < abs(scale) < 0.01 else f"{value:.3f}"


def _raw(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def by_setting(settings: list[Setting], results: list[RunResult]) -> dict[str, list[RunResult]]:
    """Finished results grouped by setting slug, every setting present (possibly empty)."""
    grouped: dict[str, list[RunResult]] = {setting.slug: [] for setting in settings}
    for result in results:
        if result.finished:
            grouped[result.run.setting.slug].append(result)
    return grouped


def summaries(runs: list[RunResult], metrics: list[Metric]) -> dict[str, tuple[Summary, Summary]]:
    """``{metric: (summary of final values, summary of best values)}`` over the runs that logged the metric."""
    return {
        m.name: (summarize([r.final[m.name] for r in runs if m.name in r.final]),
                 summarize([r.best[m.name] for r in runs if m.name in r.best]))
        for m in metrics
    }  # fmt: skip


def write_runs_csv(path: Path, output: Path, axes: list[Axis], metrics: list[Metric], results: list[RunResult]) -> Path:
    header = ["setting", *(axis.name for axis in axes), "seed", "status", "seconds", "run_dir"]
    header += [f"{m.name} {kind}" for m in metrics for kind in ("final", "best")]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            row = [r.run.setting.label, *(r.run.setting.values[axis.key].text for axis in axes), r.run.seed, r.status]
            row += ["" if r.seconds is None else f"{r.seconds:.1f}", r.run.run_dir.relative_to(output).as_posix()]
            row += [_raw(values.get(m.name)) for m in metrics for values in (r.final, r.best)]
            writer.writerow(row)
    return path


def write_summary_csv(
    path: Path, axes: list[Axis], settings: list[Setting], metrics: list[Metric], results: list[RunResult]
) -> Path:
    header = ["setting", *(axis.name for axis in axes), "n"]
    for m in metrics:
        header += [f"{m.name} {col}" for col in ("mean", "std", "ci95 low", "ci95 high", "best mean", "best std")]
    grouped = by_setting(settings, results)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for setting in settings:
            runs = grouped[setting.slug]
            row = [setting.label, *(setting.values[axis.key].text for axis in axes), len(runs)]
            for final, best in summaries(runs, metrics).values():
                row += [_raw(final.mean), _raw(final.std), _raw(final.ci_low), _raw(final.ci_high)]
                row += [_raw(best.mean), _raw(best.std)]
            writer.writerow(row)
    return path


def final_cell(summary: Summary) -> str:
    """``0.812 ± 0.021 [0.760, 0.864]``; the mean alone for one run; ``-`` for none."""
    if summary.mean is None:
        return "-"
    mean, std, low, high = (
        number(v, summary.mean) for v in (summary.mean, summary.std, summary.ci_low, summary.ci_high)
    )
    return mean if summary.std is None else f"{mean} ± {std} [{low}, {high}]"


def best_cell(summary: Summary) -> str:
    if summary.mean is None:
        return "-"
    mean, std = number(summary.mean), number(summary.std, summary.mean)
    return mean if summary.std is None else f"{mean} ± {std}"


def write_summary_md(
    path: Path,
    title: str,
    header_lines: list[str],
    settings: list[Setting],
    metrics: list[Metric],
    results: list[RunResult],
) -> Path:
    """The table a person reads: what was run, then one row per setting linked to its runs folder."""
    grouped = by_setting(settings, results)
    columns = ["setting", "n"]
    columns += [f"{m.name} (final)" for m in metrics] + [f"{m.name} (best, {m.mode})" for m in metrics]
    lines = [f"# {title}", "", *header_lines, ""]
    lines += ["| " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * (2 * len(metrics))]
    for setting in settings:
        runs = grouped[setting.slug]
        stats = summaries(runs, metrics)
        cells = [f"[{setting.label}](runs/{setting.slug}/)", str(len(runs))]
        cells += [final_cell(stats[m.name][0]) for m in metrics] + [best_cell(stats[m.name][1]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in results if not r.finished]
    if failed:
        lines += ["", f"Not finished, left out of the statistics: {len(failed)} run(s)"]
        lines += [f"- `{r.run.name}`: {r.status}" for r in failed]
    lines += [
        "",
        "n: finished seeds. Final: the last value each run logged; `mean ± std [low, high]`: mean and sample standard "
        "deviation (n − 1) over seeds, and the 95% confidence interval of the mean (Student's t, n − 1 degrees of "
        "freedom). Best: the minimum or maximum each run reached (mean ± std), which picks its step with hindsight.",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
