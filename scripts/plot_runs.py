"""Plot the curves of one or more runs, overlaid, one PNG per group of metrics.

    python scripts/plot_runs.py logs/quickstart-dpo/version_* [--out plots]

Reads each run's TensorBoard event files and writes ``loss.png`` (train/val loss), ``rewards.png`` (train/val
reward accuracy and margin) and ``throughput.png`` (tokens per second and padding fraction) into ``--out``.
Each run keeps one colour across panels and is labelled ``experiment/version``; training curves are solid,
validation curves dashed with markers. A group none of the runs has data for is skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.tensorboard import read_scalars  # noqa: E402

# group -> panels -> (panel title, tags)
GROUPS: dict[str, list[tuple[str, list[str]]]] = {
    "loss": [("loss", ["train/loss", "val/loss"])],
    "rewards": [
        ("reward accuracy", ["train/rewards/accuracies", "val/rewards/accuracies"]),
        ("reward margin", ["train/rewards/margins", "val/rewards/margins"]),
    ],
    "throughput": [
        ("tokens per second", ["perf/tokens_per_sec"]),
        ("padding fraction", ["perf/padding_fraction"]),
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


def plot_group(name: str, panels: list[tuple[str, list[str]]], runs: dict[str, dict], out: Path) -> Path | None:
    """Write ``<out>/<name>.png``, or return None when no run has any of the group's tags."""
    if not any(tag in scalars for _, tags in panels for tag in tags for scalars in runs.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, tags) in zip(axes[0], panels, strict=True):
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
    parser.add_argument("--out", type=Path, default=Path("plots"), help="directory for the PNG files")
    args = parser.parse_args(argv)

    dirs = run_dirs(args.runs)
    if not dirs:
        raise SystemExit(f"no TensorBoard event files under {', '.join(map(str, args.runs))}")
    runs = {f"{d.parent.name}/{d.name}": read_scalars(d) for d in dirs}
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, panels in GROUPS.items():
        path = plot_group(name, panels, runs, args.out)
        print(f"wrote {path}" if path else f"skipped {name}: no data")
        if path:
            written.append(path)
    return written


if __name__ == "__main__":
    main()
