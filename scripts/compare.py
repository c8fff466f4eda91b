"""Train the preference algorithms on the demo data over several seeds and compare them.

    python scripts/compare.py [--steps 200] [--val-every 25] [--seeds 3] [--only DPO beta-DPO] [--jobs N]
                              [--output logs/compare] [--dry-run]

A preset of `scripts/sweep.py`: the five quickstart recipes are the grid, each trained through `lit_align fit` (a
subprocess, exactly as a user runs it) with the same seeds, step budget and validation schedule, into
<output>/runs/<recipe>/seed-<seed>. Writes the sweep's files: summary.md and summary.csv (final validation loss,
reward accuracy and margin per algorithm: mean ± std [95% CI] over seeds), sweep.csv (one row per run),
curves.png and final.png. Calling it again resumes: finished runs are kept, more seeds are added; other --steps or
--val-every need another --output. ORPO's loss includes its NLL term and its rewards are lambda-scaled average
log-probs, so compare its accuracy, not its loss or margin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.sweeps import SweepError, SweepSpec, config_axis, parse_metrics, parse_seeds, run_sweep  # noqa: E402

RECIPES = {
    "DPO": "configs/quickstart/dpo.yaml",
    "beta-DPO": "configs/beta_dpo/quickstart.yaml",
    "fusion-beta DPO": "configs/beta_dpo/fusion_quickstart.yaml",
    "ORPO": "configs/orpo/quickstart.yaml",
    "preference-guided DPO": "configs/preference_guided/quickstart.yaml",
}
METRICS = "val/loss,val/rewards/accuracies,val/rewards/margins"
ORPO_NOTE = (
    "ORPO's loss includes its NLL term and its rewards are lambda-scaled average log-probs: compare its reward "
    "accuracy, not its loss or margin."
)


def build_spec(argv: list[str] | None = None) -> SweepSpec:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run (default 200)")
    parser.add_argument("--val-every", type=int, default=25, help="validate every N steps (default 25)")
    parser.add_argument("--seeds", default="3", help="N for seeds 1..N, or a list such as 1,7,42 (default 3)")
    parser.add_argument("--only", nargs="*", choices=list(RECIPES), help="a subset of the algorithms")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time; they share this machine (default 1)")
    parser.add_argument("--output", type=Path, help="the comparison folder (default logs/compare)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their steps; run nothing")
    args = parser.parse_args(argv)
    names = args.only or list(RECIPES)
    return SweepSpec(
        configs=[],
        axes=[config_axis([RECIPES[name] for name in names], {RECIPES[name]: name for name in names})],
        seeds=parse_seeds(args.seeds),
        metrics=parse_metrics(METRICS),
        sets=[("trainer.max_steps", str(args.steps)), ("trainer.val_check_interval", str(args.val_every))],
        output=args.output or ROOT / "logs" / "compare",
        jobs=args.jobs,
        dry_run=args.dry_run,
        command=["python", "scripts/compare.py", *(sys.argv[1:] if argv is None else argv)],
        title="Comparison",
        notes=[ORPO_NOTE] if "ORPO" in names else [],
    )


def main(argv: list[str] | None = None) -> int:
    try:
        return run_sweep(build_spec(argv))
    except SweepError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
