"""Run a grid of `lit_align fit` settings over several seeds; tabulate means with 95% confidence intervals.

    python scripts/sweep.py --config configs/quickstart/dpo.yaml \\
        --grid 'model.init_args.loss.init_args.beta=[0.05,0.1]' --seeds 3 --set trainer.max_steps=50

Every combination of the --grid values runs once per seed, each through `lit_align fit` in a subprocess (the
repository root as working directory), into <output>/runs/<setting>/seed-<seed>. Call the same command again to
resume: finished runs (their run.json says so) are skipped, unfinished folders are moved aside to
<run dir>.attempt-<n> and run again; more seeds or grid values add runs to the same tables. Writes sweep.csv (one
row per run), summary.csv and summary.md (one row per setting: mean ± std [95% CI] over seeds), curves.png and
final.png. Exit code 1 when any run failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.sweeps import (  # noqa: E402
    SweepError,
    SweepSpec,
    parse_grid,
    parse_metrics,
    parse_seeds,
    parse_set,
    run_sweep,
)

DEFAULT_METRICS = "val/loss,val/rewards/accuracies"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="a recipe or fragment, in order, as for lit_align fit (repeatable; optional when "
                             "--grid config=[...] gives the recipes)")  # fmt: skip
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=[V1,V2]",
                        help="an axis: a dotted lit_align fit setting and a YAML list of values, each passed as "
                             "--KEY=<value>; KEY config makes the recipe an axis (YAML paths). Runs: every "
                             "combination of all axes, times the seeds")  # fmt: skip
    parser.add_argument("--seeds", default="3", help="N for seeds 1..N, or a list such as 1,7,42 (default 3)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fixed override for every run, e.g. trainer.max_steps=20 (repeatable); relative "
                             "paths are read from the repository root")  # fmt: skip
    parser.add_argument("--metrics", default=DEFAULT_METRICS,
                        help=f"comma list of logged metrics to report, each with an optional :min or :max saying "
                             f"which end is best (default {DEFAULT_METRICS}; min for names with loss, nll, "
                             "perplexity or kl, else max)")  # fmt: skip
    parser.add_argument("--output", type=Path, help="the sweep folder (default logs/sweeps/<name>)")
    parser.add_argument("--name", help="the sweep's name (default: the first recipe's file stem)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time (default 1). They share this machine: each gets OMP_NUM_THREADS = "
                             "cores / jobs unless you set it, and memory for N models")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their steps; run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = SweepSpec(
            configs=args.config,
            axes=[parse_grid(text) for text in args.grid],
            seeds=parse_seeds(args.seeds),
            metrics=parse_metrics(args.metrics),
            sets=[parse_set(text) for text in args.set],
            output=args.output,
            name=args.name,
            jobs=args.jobs,
            dry_run=args.dry_run,
            command=["python", "scripts/sweep.py", *(sys.argv[1:] if argv is None else argv)],
        )
        return run_sweep(spec)
    except SweepError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
