"""The sweep's pictures: ``curves.png`` (mean curve over seeds with a ±1 std band, per setting) and ``final.png``
(mean final value per setting with its 95% interval).

A curve's mean is taken only at the steps every finished seed of the setting logged: averaging a step two seeds
reached with one that three did would make the line jump where nothing happened.
"""

from __future__ import annotations

import math
from pathlib import Path

from lit_align.sweeps.collect import Metric, RunResult
from lit_align.sweeps.grid import Setting
from lit_align.sweeps.report import by_setting
from lit_align.sweeps.stats import summarize


def mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float]]:
    """``(steps, means, stds)`` at the steps all ``curves`` logged; std 0 for a single curve."""
    if not curves:
        return [], [], []
    steps = sorted(set.intersection(*(set(dict(curve)) for curve in curves)))
    means, stds = [], []
    for step in steps:
        summary = summarize([dict(curve)[step] for curve in curves])
        means.append(summary.mean)
        stds.append(summary.std or 0.0)
    return steps, means, stds


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _direction(metric: Metric) -> str:
    return "lower is better" if metric.mode == "min" else "higher is better"


def plot_curves(path: Path, settings: list[Setting], metrics: list[Metric], results: list[RunResult]) -> Path:
    plt = _pyplot()
    grouped = by_setting(settings, results)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, setting in enumerate(settings):
            curves = [r.curves[metric.name] for r in grouped[setting.slug] if metric.name in r.curves]
            steps, means, stds = mean_curve(curves)
            if not steps:
                continue
            colour = colours[i % len(colours)]
            ax.plot(steps, means, color=colour, marker="o", markersize=3, label=f"{setting.label} (n={len(curves)})")
            low = [m - s for m, s in zip(means, stds, strict=True)]
            high = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(steps, low, high, color=colour, alpha=0.2, linewidth=0)
        ax.set_title(f"{metric.name}: mean over seeds, band ±1 std")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{metric.name} ({_direction(metric)})")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_final(path: Path, settings: list[Setting], metrics: list[Metric], results: list[RunResult]) -> Path:
    plt = _pyplot()
    grouped = by_setting(settings, results)
    width = max(6.0, 0.9 * len(settings) + 2)
    fig, axes = plt.subplots(1, len(metrics), figsize=(width * len(metrics), 4.8), squeeze=False)
    positions = list(range(len(settings)))
    for ax, metric in zip(axes[0], metrics, strict=True):
        stats = [summarize([r.final[metric.name] for r in grouped[s.slug] if metric.name in r.final]) for s in settings]
        means = [math.nan if s.mean is None else s.mean for s in stats]
        errors = [math.nan if s.half_width is None else s.half_width for s in stats]  # n = 1: no error bar
        ax.bar(positions, means, yerr=errors, capsize=4, color="tab:blue", alpha=0.75)
        for x, summary, mean in zip(positions, stats, means, strict=True):
            top = summary.ci_high if summary.ci_high is not None else mean
            if not math.isnan(top):
                ax.annotate(f"n={summary.n}", (x, top), textcoords="offset points", xytext=(0, 3), ha="center",
                            fontsize="small")  # fmt: skip
        rotate = len(settings) > 2
        ax.set_xticks(
            positions, [s.label for s in settings], rotation=20 if rotate else 0, ha="right" if rotate else "center"
        )
        ax.set_title(f"final {metric.name}: mean over seeds, 95% CI")
        ax.set_ylabel(f"{metric.name} ({_direction(metric)})")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
