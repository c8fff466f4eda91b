"""Prepare a recipe's data ahead of training: write the cleaned records and DATA_CARD.md, or dry-run the checks.

    python scripts/prepare_data.py --config configs/quickstart/dpo.yaml [--output DIR] [--dry-run]

The recipe's `data:` section is read by the same CLI that trains, so there is one schema: the keys are
AlignDataModule's constructor arguments, and the tokenizer and task come from `model:` as in training.
`--dry-run` reads only the first rows of every source (format detection, conversion, cleaning and
tokenisation included), prints the plan and the counts, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lit_align.cli import instantiate
from lit_align.data.datamodule import AlignDataModule
from lit_align.outputs import output_directory


def _print_reports(title: str, reports) -> None:
    print(f"\n{title}")
    for r in reports:
        langs = ", ".join(f"{k} {v}" for k, v in sorted(r.languages.items())) or "-"
        drops = ", ".join(f"{k} {v}" for k, v in r.drops.items()) or "none"
        print(
            f"  {r.name} ({r.format}, {r.path}): rows {r.counts['rows_read']}, records {r.counts['records']}, "
            f"examples {r.counts['examples']}, truncated {r.counts['truncated']}; languages: {langs}; "
            f"not used: {drops}"
        )


def dry_run(data: AlignDataModule, rows: int) -> None:
    print("Plan")
    s = data.settings
    print(f"  tokenizer {data.tokenizer_path}, task {s.task}, max_length {s.max_length}, buckets {data.bounds}")
    print(f"  batch_size {data.batch_size}, target_zh_share {data.target_zh_share}, min_zh_ratio {s.min_zh_ratio}")
    for split, sources in (("train", data.train_sources), ("val", data.val_sources)):
        for source in sources:
            print(
                f"  {split}: {source.path} format={source.format} split={source.split} weight={source.weight} "
                f"options={source.options}"
            )
        prepared = data.prepare_split(sources, max_rows=rows)
        _print_reports(f"{split}: checks on the first {rows} rows of each source", prepared.reports)
    print("\nDry run: nothing written.")


def write(data: AlignDataModule, output: Path) -> None:
    start = time.perf_counter()
    data.setup()
    seconds = time.perf_counter() - start
    output.mkdir(parents=True, exist_ok=True)
    for split, prepared in (("train", data.train_data), ("val", data.val_data)):
        with open(output / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for record in prepared.records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        _print_reports(split, prepared.reports)
    (output / "DATA_CARD.md").write_text(data.data_card(), encoding="utf-8")
    rows = sum(r.counts["rows_read"] for d in (data.train_data, data.val_data) for r in d.reports)
    print(f"\nprepared {rows} rows in {seconds:.1f}s ({rows / seconds:.0f} rows/s); wrote {output}/")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="recipe YAML (repeatable, like lit_align)")
    parser.add_argument("--output", type=Path, help="where to write (default: the next free logs/prepared/N)")
    parser.add_argument("--overwrite", action="store_true", help="replace files already in --output")
    parser.add_argument("--dry-run", action="store_true", help="check the first rows of every source, write nothing")
    parser.add_argument("--dry-run-rows", type=int, default=5)
    args, overrides = parser.parse_known_args(argv)
    config_args = [arg for path in args.config for arg in ("--config", path)] + overrides
    data = instantiate(config_args).datamodule
    if args.dry_run:
        dry_run(data, args.dry_run_rows)
    else:
        write(data, output_directory(args.output, Path("logs") / "prepared", args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
