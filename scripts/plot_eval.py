"""Plot lm-eval scores: how they moved during training runs, and how finished models compare.

    python scripts/plot_eval.py logs/quickstart-dpo/latest [more runs]            # score against step
    python scripts/plot_eval.py base/results.json sft/results.json dpo/results.json # models side by side
    [--output DIR] [--overwrite]

A run directory (``logs/<experiment>/version_N``, or the experiment directory for all its versions) holds the
scores the `LMEval` callback wrote to ``lm_eval/step_<N>/results.json``: each metric gets a PNG,
``<task>__<metric>[__<filter>].png``, with one line per run and a band of one standard error around it (scores on
50 examples are noisy, and the band shows how noisy). ``results.json`` files (written by ``lit_align eval``, or a
folder holding one) make ``models.png``: one group of bars per metric, one bar per model, with standard-error
bars. A model is named by its manifest's ``name``, else by the folder the file is in. Metrics of different scales
(accuracy, perplexity) share that chart's axis, so compare within a group. Output goes to ``--output``
(default: the next free ``logs/plots/N``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.evaluation.results import result_rows  # noqa: E402
from lit_align.outputs import output_directory  # noqa: E402

Point = tuple[int, float, float | None]
"""(optimizer step, score, standard error or None)."""


def read_results(path: Path) -> dict[str, Any]:
    """A ``results.json``; one that does not parse stops the script naming the file."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f"{path}: not valid JSON ({error})") from error
    if not isinstance(results, dict):
        raise SystemExit(f"{path}: expected lm-eval's result object, found a {type(results).__name__}")
    return results


def metric_name(row: dict[str, Any]) -> str:
    """``<task>/<metric>``, with ``/<filter>`` unless the filter is lm-eval's ``none`` (as the callback logs it)."""
    name = f"{row['task']}/{row['metric']}"
    return name if row["filter"] == "none" else f"{name}/{row['filter']}"


def step_results(run: Path) -> dict[int, dict[str, Any]]:
    """``{step: results}`` from a run's ``lm_eval/step_<N>/results.json``, by step."""
    found = {}
    for path in run.glob("lm_eval/step_*/results.json"):
        match = re.fullmatch(r"step_(\d+)", path.parent.name)
        if match:
            found[int(match.group(1))] = read_results(path)
    return dict(sorted(found.items()))


def series_by_metric(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, list[Point]]]:
    """``{metric: {run label: [(step, value, stderr), ...]}}`` from each run's ``{step: results}``, by step."""
    series: dict[str, dict[str, list[Point]]] = {}
    for label, by_step in runs.items():
        for step, results in sorted(by_step.items()):
            for row in result_rows(results):
                if row["value"] is not None:
                    series.setdefault(metric_name(row), {}).setdefault(label, []).append(
                        (step, row["value"], row["stderr"])
                    )
    return series


def scores_by_metric(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple[float, float | None]]]:
    """``{metric: {model label: (value, stderr)}}`` from each model's ``results.json``, metrics in first-seen order."""
    scores: dict[str, dict[str, tuple[float, float | None]]] = {}
    for label, results in models.items():
        for row in result_rows(results):
            if row["value"] is not None:
                scores.setdefault(metric_name(row), {})[label] = (row["value"], row["stderr"])
    return scores


def model_label(path: Path, results: dict[str, Any]) -> str:
    """The manifest's ``name`` (``lit_align eval`` and the callback write one), else the file's folder name."""
    manifest = results.get("lit_align")
    name = manifest.get("name") if isinstance(manifest, dict) else None
    return name if isinstance(name, str) and name else path.resolve().parent.name


def run_label(run: Path) -> str:
    """``experiment/version_N`` of a run directory, through a ``latest`` link to the version it points to."""
    resolved = run.resolve()
    return f"{resolved.parent.name}/{resolved.name}"


def sort_inputs(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(run directories, results files) among ``paths``; an experiment directory stands for its runs."""
    runs, files = [], []
    for path in paths:
        if path.is_file():
            if path.suffix != ".json":
                raise SystemExit(f"{path}: expected a results.json written by lm-eval, `lit_align eval` or LMEval")
            files.append(path)
        elif (path / "lm_eval").is_dir():
            runs.append(path)
        elif (path / "results.json").is_file():
            files.append(path / "results.json")
        elif versions := [p for p in sorted(path.glob("version_*")) if (p / "lm_eval").is_dir()]:
            runs.extend(versions)
        else:
            raise SystemExit(
                f"{path}: neither a results.json nor a run with lm_eval/step_*/ scores (add "
                "--config callbacks/lm_eval.yaml to the run, or point at the folder `lit_align eval` wrote)"
            )
    return runs, files


def _unique(label: str, taken: dict[str, Any]) -> str:
    candidate, n = label, 2
    while candidate in taken:
        candidate, n = f"{label} ({n})", n + 1
    return candidate


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def file_name(metric: str) -> str:
    """A PNG name for ``metric``: its parts joined by ``__``, anything unsafe in a file name replaced by ``_``."""
    return re.sub(r"[^\w.-]+", "_", metric.replace("/", "__")) + ".png"


def plot_series(metric: str, runs: dict[str, list[Point]], out: Path) -> Path:
    """``<out>/<metric>.png``: the metric against optimizer step, one line per run, ± one standard error."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in runs.items():
        steps = [p[0] for p in points]
        values = [p[1] for p in points]
        (line,) = ax.plot(steps, values, marker="o", markersize=4, label=label)
        if all(p[2] is not None for p in points):
            low = [v - p[2] for v, p in zip(values, points, strict=True)]
            high = [v + p[2] for v, p in zip(values, points, strict=True)]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_title(f"{metric} (band: ± 1 standard error)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / file_name(metric)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_models(scores: dict[str, dict[str, tuple[float, float | None]]], out: Path) -> Path:
    """``<out>/models.png``: one group of bars per metric, one bar per model, standard errors as error bars."""
    plt = _pyplot()
    metrics = list(scores)
    models = list(dict.fromkeys(label for by_model in scores.values() for label in by_model))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 + len(metrics) * (0.3 * len(models) + 0.5)), 4.5))
    for i, model in enumerate(models):
        xs = [m + (i - (len(models) - 1) / 2) * width for m, metric in enumerate(metrics) if model in scores[metric]]
        entries = [scores[metric][model] for metric in metrics if model in scores[metric]]
        errors = [float("nan") if stderr is None else stderr for _, stderr in entries]
        ax.bar(xs, [value for value, _ in entries], width, yerr=errors, capsize=3, label=model)
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right")
    ax.set_title("lm-eval scores by model (error bars: ± 1 standard error)")
    ax.set_xlabel("task/metric")
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / "models.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories and/or results.json files")
    parser.add_argument("--output", type=Path, help="directory for the PNG files (default: next free logs/plots/N)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNGs already in --output")
    args = parser.parse_args(argv)

    for path in args.paths:
        if not path.exists():
            raise SystemExit(f"{path}: no such file or directory")
    run_paths, files = sort_inputs(args.paths)
    runs: dict[str, dict[int, dict]] = {}
    for run in run_paths:
        runs[_unique(run_label(run), runs)] = step_results(run)
    models: dict[str, dict] = {}
    for path in files:
        results = read_results(path)
        models[_unique(model_label(path, results), models)] = results
    series, scores = series_by_metric(runs), scores_by_metric(models)
    if not series and not scores:
        raise SystemExit(f"no lm-eval scores in {', '.join(map(str, args.paths))}")

    out = output_directory(args.output, Path("logs") / "plots", args.overwrite)
    written = [plot_series(metric, by_run, out) for metric, by_run in series.items()]
    if scores:
        written.append(plot_models(scores, out))
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
