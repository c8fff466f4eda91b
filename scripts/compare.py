"""Train DPO, beta-DPO, ORPO and preference-guided DPO on the demo data with one seed and budget; compare.

    python scripts/compare.py [--steps 200] [--seed 42] [--output DIR]

Each algorithm runs its quickstart recipe through `lit_align fit` (a subprocess, exactly as a user runs it)
with the same seed, step budget and validation schedule. Writes `<output>/comparison.md` (final validation loss,
reward accuracy and margin, wall time) and `<output>/comparison.png` (their curves). ORPO's loss includes its
NLL term and its rewards are lambda-scaled average log-probs, so compare its accuracy, not its loss or margin.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.outputs import output_directory  # noqa: E402
from lit_align.tensorboard import read_scalars  # noqa: E402

RECIPES = {
    "DPO": "configs/quickstart/dpo.yaml",
    "beta-DPO": "configs/beta_dpo/quickstart.yaml",
    "ORPO": "configs/orpo/quickstart.yaml",
    "preference-guided DPO": "configs/preference_guided/quickstart.yaml",
}
CURVES = [("train/loss", "training loss"), ("val/rewards/accuracies", "val reward accuracy"),
          ("val/rewards/margins", "val reward margin")]  # fmt: skip


def run(name: str, recipe: str, args: argparse.Namespace) -> tuple[Path, float]:
    slug = name.lower().replace(" ", "-")
    command = [
        sys.executable, "-m", "lit_align", "fit", "--config", recipe,
        f"--seed_everything={args.seed}", f"--trainer.max_steps={args.steps}",
        f"--trainer.val_check_interval={args.val_every}", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={args.out / 'runs'}", f"--trainer.logger.init_args.name={slug}",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-4000:]}")
    return sorted((args.out / "runs" / slug).glob("version_*"))[-1], seconds


def last(scalars: dict, tag: str) -> str:
    return f"{scalars[tag][-1][1]:.3f}" if tag in scalars else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, help="where to write (default: the next free logs/compare/N)")
    parser.add_argument("--only", nargs="*", choices=list(RECIPES), help="a subset of the algorithms")
    args = parser.parse_args(argv)
    args.out = output_directory(args.output, ROOT / "logs" / "compare").resolve()  # never a finished one

    results = {}
    for name in args.only or RECIPES:
        run_dir, seconds = run(name, RECIPES[name], args)
        results[name] = (read_scalars(run_dir), seconds, run_dir)
        print(f"{name}: {seconds:.0f}s, {run_dir}", flush=True)

    lines = [
        f"Demo preference data, tiny model, seed {args.seed}, {args.steps} steps, validation every {args.val_every}.",
        "",
        "| algorithm | final val loss | final val reward accuracy | final val reward margin | wall time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (scalars, seconds, _) in results.items():
        cells = [name, last(scalars, "val/loss"), last(scalars, "val/rewards/accuracies")]
        cells += [last(scalars, "val/rewards/margins"), f"{seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (args.out / "comparison.md").write_text(table, encoding="utf-8")
    print("\n" + table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4))
    for ax, (tag, title) in zip(axes, CURVES, strict=True):
        for name, (scalars, _, _) in results.items():
            if tag in scalars:
                steps, values = zip(*scalars[tag], strict=True)
                ax.plot(steps, values, label=name, marker="o" if tag.startswith("val/") else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out / "comparison.png", dpi=120)
    print(f"wrote {args.out / 'comparison.md'} and {args.out / 'comparison.png'}")


if __name__ == "__main__":
    main()
