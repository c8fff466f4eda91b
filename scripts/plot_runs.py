"""Plot the curves of one or more runs, overlaid, one PNG per group of metrics.

    python scripts/plot_runs.py logs/quickstart-dpo/version_* [--output DIR] [--overwrite]

Reads each run's TensorBoard event files and writes ``loss.png`` (train/val loss), ``rewards.png`` (train/val
reward accuracy and margin) and ``throughput.png`` (tokens per second and padding fraction) into ``--output``
(default: the next free ``logs/plots/N``, so a second call never replaces the first's pictures). Each run keeps
one colour across panels and is labelled ``experiment/version`` (a ``latest`` link is named by the version it
points to); training curves are solid, validation curves dashed with markers. A group none of the runs has data
for is skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.outputs import output_directory  # noqa: E402
from lit_align.tensorboard import read_scalars  # noqa: E402

# group -> panels -> (panel title, y-axis label, tags)
GROUPS: dict[str, list[tuple[str, str, list[str]]]] = {
    "loss": [("loss", "loss", ["train/loss", "val/loss"])],
    "rewards": [
        (
            "reward accuracy",
            "share of pairs, chosen reward > rejected",
            ["train/rewards/accuracies", "val/rewards/accuracies"],
        ),
        (
            "reward margin",
            "chosen - rejected reward (beta x log-ratio)",
            ["train/rewards/margins", "val/rewards/margins"],
        ),
    ],
    "throughput": [
        ("tokens per second", "non-padding tokens / s", ["perf/tokens_per_sec"]),
        ("padding fraction", "padding / all positions", ["perf/padding_fraction"]),
    ],
}


def run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories among ``paths``; an experiment directory stands for its ``version_*`` runs."""
    runs = []
    for path in paths:
        if any(path.glob("events.out.tfevents.*")):
            runs.append(path)
        else:
            runs.extend(p for p in sorted(path.glob("version_*")) if any(p.glob("events.out.tfevents.*")))
    return runs


def run_label(run: Path) -> str:
    """``experiment/version_N`` of a run directory, through a ``latest`` link to the version it points to."""
    resolved = run.resolve()
    return f"{resolved.parent.name}/{resolved.name}"


def plot_group(name: str, panels: list[tuple[str, str, list[str]]], runs: dict[str, dict], out: Path) -> Path | None:
    """Write ``<out>/<name>.png``, or return None when no run has any of the group's tags."""
    if not any(tag in scalars for _, _, tags in panels for tag in tags for scalars in runs.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, ylabel, tags) in zip(axes[0], panels, strict=True):
        for i, (label, scalars) in enumerate(runs.items()):
            for tag in tags:
                if tag not in scalars:
                    continue
                steps, values = zip(*scalars[tag], strict=True)
                style = {"linestyle": "--", "marker": "o", "markersize": 3} if tag.startswith("val/") else {}
                legend = f"{label} {tag.split('/')[0]}" if len(tags) > 1 else label
                ax.plot(steps, values, color=colours[i % len(colours)], label=legend, **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (logs/<experiment>/version_N)")
    parser.add_argument("--output", type=Path, help="directory for the PNG files (default: next free logs/plots/N)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNGs already in --output")
    args = parser.parse_args(argv)

    dirs = run_dirs(args.runs)
    if not dirs:
        raise SystemExit(f"no TensorBoard event files under {', '.join(map(str, args.runs))}")
    runs = {run_label(d): read_scalars(d) for d in dirs}
    out = output_directory(args.output, Path("logs") / "plots", args.overwrite)
    written = []
    for name, panels in GROUPS.items():
        path = plot_group(name, panels, runs, out)
        print(f"wrote {path}" if path else f"skipped {name}: no data")
        if path:
            written.append(path)
    return written


if __name__ == "__main__":
    main()
