"""Prepare a recipe's data ahead of training: write the prepared splits, records and DATA_CARD.md, or dry-run.

    python scripts/prepare_data.py --config configs/quickstart/dpo.yaml [--output DIR] [--dry-run]
    lit_align fit --config configs/quickstart/dpo.yaml --data.prepared DIR   # on any machine, sources or not

The recipe's `data:` section is read by the same CLI that trains, so there is one schema: the keys are
AlignDataModule's constructor arguments, and the tokenizer and task come from `model:` as in training.
The data is prepared as training prepares it (through the data cache when it is on: a second call is a cache hit),
and `DIR/train/` and `DIR/val/` (val only with val sources) are written in the cache's format with the recipe in
their meta.json, for `data.prepared: DIR` (see lit_align/data/prepared_dir.py). `DIR/train.jsonl` and `val.jsonl`
hold the cleaned records, for reading.
`--dry-run` reads only the first rows of every source (format detection, conversion, cleaning and
tokenisation included), prints the plan and the counts, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from lit_align.cli import instantiate
from lit_align.data.cache import cache_key, recipe_fields, save_prepared
from lit_align.data.datamodule import AlignDataModule
from lit_align.data.prepare import PreparedData
from lit_align.data.table import ExampleTable
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


def _unnumbered(examples):
    """The examples as preparation made them, without the ``split`` and ``index`` that set-up gives each."""
    if isinstance(examples, ExampleTable):
        return ExampleTable(examples.dataset, examples.kinds, examples.rows, digest=examples.digest)
    return [{key: value for key, value in example.items() if key not in ("split", "index")} for example in examples]


def _clear_split(folder: Path) -> None:
    """Remove a split folder an earlier call wrote (it has a meta.json); refuse to touch anything else."""
    if not folder.exists():
        return
    if not (folder / "meta.json").is_file():
        raise SystemExit(
            f"{folder} exists and was not written by prepare_data.py: move it away, or choose another --output"
        )
    shutil.rmtree(folder)


def write_prepared(data: AlignDataModule, output: Path) -> None:
    """``output/train`` and ``output/val`` in the data cache's format, with the recipe and the cache key in their
    meta.json; from the cache's memory-mapped copy when there is one (then written as stored, not re-encoded)."""
    settings, tokenizer = data.settings, data.tokenizer
    train_key = cache_key(data.train_sources, settings, tokenizer)
    splits = [("train", data.train_sources, data.train_data, train_key)]
    if data.val_sources:
        val_key = cache_key(data.val_sources, settings, tokenizer, depends_on=train_key) if train_key else None
        splits.append(("val", data.val_sources, data.val_data, val_key))
    _clear_split(output / "val")  # a val/ from an earlier call with val sources must not outlive them
    for split, sources, prepared, key in splits:
        _clear_split(output / split)
        examples = _unnumbered(prepared.examples)
        whole = PreparedData(examples, prepared.records, prepared.reports, prepared.record_digests)
        save_prepared(output / split, key, whole, recipe_fields(sources, settings, tokenizer))


def write(data: AlignDataModule, output: Path) -> None:
    if data.prepared is not None:
        raise SystemExit(
            f"the recipe sets data.prepared ({data.prepared}): prepare_data.py prepares from the sources; remove "
            "data.prepared (or --data.prepared null) to prepare them"
        )
    data.max_val_examples = None  # the folder holds the whole val split; training applies max_val_examples
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
    write_prepared(data, output)
    rows = sum(r.counts["rows_read"] for d in (data.train_data, data.val_data) for r in d.reports)
    print(f"\nprepared {rows} rows in {seconds:.1f}s ({rows / max(seconds, 1e-9):.0f} rows/s); wrote {output}/")
    print(f"train from it anywhere with --data.prepared {output}")


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
