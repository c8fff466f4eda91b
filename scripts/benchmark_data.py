"""Measure the data pipeline: padding of length-bucketed vs random batches, and preparation throughput.

    python scripts/benchmark_data.py [--batch-size 8] [--tokenizer assets/tiny-chat] [--data-dir ../shared/data]
    python scripts/benchmark_data.py --rows 160000 [--uncached]

With ``--rows N`` it measures the prepared-data cache instead (`lit_align.data.cache`) on N synthetic HH-RLHF pairs:
the shared sample's 500 rows repeated, each copy's first question prefixed with its row number so that no two are
duplicates. Each set-up runs in a fresh process: the first preparation (an empty cache: prepare, write, map), the
cached start (a second identical set-up), and with ``--uncached`` one with ``data.cache: false``; for each, the wall
time of ``setup()`` and the training sampler, and the process's resident memory before and after them (current, and
the peak while they ran).

Uses the shared HH-RLHF and UltraFeedback samples and the built-in tiny tokenizer. Padding is the share of
padded positions among all positions of a batch (chosen and rejected each padded to the batch's longest
sequence, as the collator does), over one epoch of batches. The "pairs alone" column is the floor that no
batching can beat while chosen and rejected share one forward: each pair padded to its own longer side.
Throughput is rows per second through the whole preparation (read, convert, clean, de-duplicate, render
with the chat template, tokenise). Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lit_align.data.prepare import DataSource, PrepareSettings, prepare_sources
from lit_align.data.sampler import LengthBucketBatchSampler
from lit_align.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SOURCES_HH = "hh_rlhf_harmless_base.test.jsonl"
SOURCES = {
    "HH-RLHF (harmless-base test, 500)": "hh_rlhf_harmless_base.test.jsonl",
    "UltraFeedback binarized (16)": "ultrafeedback_binarized.train_prefs.jsonl",
}


def padding_fraction(batches: list[list[int]], examples: list[dict]) -> float:
    """1 - real tokens / padded positions, counting the chosen and the rejected rows of every pair."""
    real = padded = 0
    for batch in batches:
        for side in ("chosen_input_ids", "rejected_input_ids"):
            lengths = [len(examples[i][side]) for i in batch]
            real += sum(lengths)
        longest = max(max(len(examples[i]["chosen_input_ids"]), len(examples[i]["rejected_input_ids"])) for i in batch)
        padded += 2 * len(batch) * longest
    return 1 - real / padded


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def synthetic_pairs(sample: Path, rows: int, output: Path) -> None:
    """``rows`` HH-RLHF pairs from ``sample``'s, each copy's first question prefixed with ``[row]``."""
    pairs = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(output, "w", encoding="utf-8") as file:
        for row in range(rows):
            pair = pairs[row % len(pairs)]
            marked = {key: pair[key].replace("Human: ", f"Human: [{row}] ", 1) for key in ("chosen", "rejected")}
            file.write(json.dumps(marked) + "\n")


def _memory_gb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in GB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return tuple(int(fields[key].split()[0]) / 2**20 for key in ("VmRSS", "VmHWM"))


def measure_setup(config: dict) -> dict:
    """One data module set-up in this process: seconds, and memory before and after (see the module docstring)."""
    from lit_align.data.datamodule import AlignDataModule, DataSource
    from lit_align.run_record import data_summary
    from lit_align.tokenizer import load_tokenizer

    load_tokenizer(config["tokenizer"])  # imports and the tokenizer are not the data's memory
    data = AlignDataModule(
        [DataSource(config["path"], name="hh")],
        tokenizer=config["tokenizer"],
        task="preference",
        max_length=config["max_length"],
        max_truncated_fraction=1.0,
        cache=config["cache"],
        cache_dir=config["cache_dir"],
    )
    before, _ = _memory_gb()
    start = time.perf_counter()
    data.setup()
    sampler = data.make_train_sampler(num_replicas=1, rank=0)
    seconds = time.perf_counter() - start
    after, peak = _memory_gb()
    start = time.perf_counter()
    data_summary(data)  # the digest every run writes to run.json
    digest_seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "examples": len(data.train_data.examples),
        "batches": len(sampler),
        "rss_before": before,
        "rss_after": after,
        "rss_peak": peak,
        "digest_seconds": digest_seconds,
    }


def cache_table(args: argparse.Namespace) -> None:
    """The ``--rows`` benchmark: one fresh process per set-up, a table of their times and memory."""
    work = Path(tempfile.mkdtemp(prefix="benchmark_data_"))
    data = work / "hh_synthetic.jsonl"
    synthetic_pairs(args.data_dir / SOURCES_HH, args.rows, data)
    base = {"path": str(data), "tokenizer": args.tokenizer, "max_length": args.max_length, "cache_dir": str(work)}
    runs = [("first preparation (cache miss)", True), ("cached start (hit)", True)]
    runs += [("data.cache: false", False)] if args.uncached else []
    print(
        f"{args.rows} synthetic HH-RLHF pairs ({data.stat().st_size / 2**20:.0f} MB), max_length {args.max_length}, "
        f"tokenizer {args.tokenizer}\n"
    )
    print("| set-up | examples | setup + sampler (s) | run.json digest (s) | RSS before (GB) | after | peak | growth |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, cache in runs:
        config = json.dumps({**base, "cache": cache})
        out = subprocess.run(
            [sys.executable, __file__, "--measure-setup", config], check=True, capture_output=True, text=True
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        cells = [
            label,
            row["examples"],
            f"{row['seconds']:.1f}",
            f"{row['digest_seconds']:.1f}",
            f"{row['rss_before']:.2f}",
            f"{row['rss_after']:.2f}",
            f"{row['rss_peak']:.2f}",
            f"{row['rss_after'] - row['rss_before']:+.2f}",
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    size = sum(p.stat().st_size for p in work.rglob("*") if p.is_file() and p != data)
    print(f"\ncache on disk: {size / 2**30:.2f} GB")
    shutil.rmtree(work)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--tokenizer", default=str(ROOT / "assets" / "tiny-chat"))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rows", type=int, help="measure the prepared-data cache on this many synthetic pairs")
    parser.add_argument("--uncached", action="store_true", help="with --rows: also a set-up with data.cache: false")
    parser.add_argument("--measure-setup", help=argparse.SUPPRESS)  # the child process of --rows
    args = parser.parse_args(argv)
    if args.measure_setup:
        print(json.dumps(measure_setup(json.loads(args.measure_setup))))
        return
    if args.rows:
        cache_table(args)
        return
    tokenizer = load_tokenizer(args.tokenizer)
    settings = PrepareSettings(task="preference", max_length=args.max_length)
    bounds = list(settings.bucket_bounds)

    header = "| data | rows | examples | rows/s | padding: random batches | bucketed batches | pairs alone |"
    print(f"batch size {args.batch_size} pairs, buckets {bounds} tokens, tokenizer {args.tokenizer}\n")
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, file in SOURCES.items():
        start = time.perf_counter()
        prepared = prepare_sources([DataSource(str(args.data_dir / file))], tokenizer, settings)
        seconds = time.perf_counter() - start
        examples = prepared.examples
        rows = prepared.reports[0].counts["rows_read"]
        batch_size = min(args.batch_size, len(examples))
        sampler = LengthBucketBatchSampler(
            [e["length"] for e in examples], batch_size, bucket_bounds=bounds, seed=0, num_replicas=1, rank=0
        )
        bucketed = padding_fraction(sampler.plan(), examples)
        shuffled = sum(padding_fraction(random_batches(len(examples), batch_size, s), examples) for s in range(5)) / 5
        floor = padding_fraction([[i] for i in range(len(examples))], examples)
        cells = [label, rows, len(examples), f"{rows / seconds:.0f}"]
        cells += [f"{shuffled:.1%}", f"{bucketed:.1%}", f"{floor:.1%}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
