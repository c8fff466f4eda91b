"""Compare two runs' logged scalars step by step: did a change (a refactor, a new version of a library) keep the
numbers?

    python scripts/diff_runs.py logs/quickstart-dpo/version_0 logs/quickstart-dpo/version_1 [--tags train/loss ...]
        [--tolerance 1e-6]

For each tag both runs logged (or the ``--tags`` given) it prints the steps compared and the largest absolute
difference, and exits with status 1 when a difference exceeds ``--tolerance`` or a tag's steps differ. Timing
tags (``perf/``) and the learning rate are left out by default: they are not results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.tensorboard import read_scalars  # noqa: E402

SKIPPED_PREFIXES = ("perf/", "train/lr", "epoch")


def diff(a: dict, b: dict, tags: list[str] | None) -> list[tuple[str, int, float | None]]:
    """``(tag, steps compared, largest absolute difference)`` per tag; ``None`` when the tag's steps differ."""
    names = tags or sorted(t for t in set(a) & set(b) if not t.startswith(SKIPPED_PREFIXES))
    rows = []
    for tag in names:
        left, right = dict(a.get(tag, [])), dict(b.get(tag, []))
        if not left or left.keys() != right.keys():
            rows.append((tag, len(left), None))
            continue
        rows.append((tag, len(left), max(abs(left[s] - right[s]) for s in left)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--tags", nargs="*", help="tags to compare (default: every result tag both runs logged)")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args(argv)
    rows = diff(read_scalars(args.run_a), read_scalars(args.run_b), args.tags)
    print("| tag | steps | max abs difference |\n|---|---:|---:|")
    failed = False
    for tag, steps, largest in rows:
        failed |= largest is None or largest > args.tolerance
        print(f"| {tag} | {steps} | {'steps differ' if largest is None else f'{largest:.3g}'} |")
    print(f"\n{'DIFFERENT' if failed else 'same'} within {args.tolerance:g}: {args.run_a} vs {args.run_b}")
    return int(failed)


if __name__ == "__main__":
    raise SystemExit(main())
