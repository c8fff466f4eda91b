"""Measure the data pipeline: padding of length-bucketed vs random batches, and preparation throughput.

    python scripts/benchmark_data.py [--batch-size 8] [--tokenizer assets/tiny-chat] [--data-dir ../shared/data]

Uses the shared HH-RLHF and UltraFeedback samples and the built-in tiny tokenizer. Padding is the share of
padded positions among all positions of a batch (chosen and rejected each padded to the batch's longest
sequence, as the collator does), over one epoch of batches. The "pairs alone" column is the floor that no
batching can beat while chosen and rejected share one forward: each pair padded to its own longer side.
Throughput is rows per second through the whole preparation (read, convert, clean, de-duplicate, render
with the chat template, tokenise). Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from lit_align.data.prepare import DataSource, PrepareSettings, prepare_sources
from lit_align.data.sampler import LengthBucketBatchSampler
from lit_align.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--tokenizer", default=str(ROOT / "assets" / "tiny-chat"))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)
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
