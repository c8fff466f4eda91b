"""Measure the data pipeline: padding of length-bucketed vs random batches, and preparation throughput.

    python scripts/benchmark_data.py [--batch-size 8] [--tokenizer assets/tiny-chat] [--data-dir ../shared/data]
    python scripts/benchmark_data.py --rows 160000 [--num-proc 1 2] [--uncached] [--no-ddp]

With ``--rows N`` it measures the prepared-data cache instead (`lit_align.data.cache`) on N synthetic HH-RLHF pairs:
the shared sample's 500 rows repeated, each copy's first question prefixed with its row number so that no two are
duplicates. Each set-up runs in a fresh process: the first preparation (an empty cache: prepare, write, map) once
per ``--num-proc`` value (``data.num_proc``; ``--num-proc`` without values leaves it out), the cached start (a second
identical set-up), with ``--uncached`` one with ``data.cache: false``, and two DDP ranks on the CPU (gloo) fitting
one step on an empty cache. For each, the wall time of ``setup()`` and the training sampler, the process's resident
memory before and after them (current, and the peak while they ran), and how many preparations it ran. The DDP
set-up is a Lightning ``Trainer(strategy="ddp", devices=2)`` around a one-weight module rather than ``lit_align fit``
with a model, so that each rank's memory is the data's and the framework's, not a model's.

Uses the shared HH-RLHF and UltraFeedback samples and the built-in tiny tokenizer. Padding is the share of
padded positions among all positions of a batch (chosen and rejected each padded to the batch's longest
sequence, as the collator does), over one epoch of batches. The "pairs alone" column is the floor that no
batching can beat while chosen and rejected share one forward: each pair padded to its own longer side.
Throughput is rows per second through the whole preparation (read, convert, clean, de-duplicate, render
with the chat template, tokenise). Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import resource
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


def _count_preparations() -> list[str]:
    """Counts this process's calls of `prepare_sources` through the data module (one per split it prepared, whether
    it tokenises itself or in ``num_proc`` workers): patches the name the data module calls."""
    import lit_align.data.splits as splits

    calls, real = [], splits.prepare_sources

    def counting(sources, *args, **kwargs):
        if sources:  # a split without sources (no validation data) prepares nothing
            calls.append(sources[0].path)
        return real(sources, *args, **kwargs)

    splits.prepare_sources = counting
    return calls


def _data_module(config: dict):
    """The benchmark's AlignDataModule; ``num_proc`` only where the set-up names it (older code has no such
    argument)."""
    from lit_align.data.datamodule import AlignDataModule, DataSource
    from lit_align.tokenizer import load_tokenizer

    load_tokenizer(config["tokenizer"])  # imports and the tokenizer are not the data's memory
    extra = {"num_proc": config["num_proc"]} if "num_proc" in config else {}
    return AlignDataModule(
        [DataSource(config["path"], name="hh")],
        tokenizer=config["tokenizer"],
        task="preference",
        max_length=config["max_length"],
        max_truncated_fraction=1.0,
        cache=config["cache"],
        cache_dir=config["cache_dir"],
        **extra,
    )


def measure_setup(config: dict) -> dict:
    """One data module set-up in this process: seconds, and memory before and after (see the module docstring)."""
    from lit_align.run_record import data_summary

    preparations = _count_preparations()
    data = _data_module(config)
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
        "preparations": len(preparations),
    }


def measure_ddp(config: dict) -> None:
    """One rank of a 2-process DDP fit of one step over the data module; writes ``rank<N>.json`` into
    ``config["output"]``: its memory before the fit and its peak (``ru_maxrss``), and how many splits it prepared.
    Lightning starts rank 1 by running this same command again."""
    import torch
    from lightning.pytorch import LightningModule, Trainer

    class OneWeight(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_idx):
            return (self.weight**2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    preparations = _count_preparations()
    data = _data_module(config)
    before, _ = _memory_gb()
    trainer = Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the data module's batch sampler shards by rank itself (as lit_align's CLI)
        default_root_dir=config["output"],
    )
    start = time.perf_counter()
    trainer.fit(OneWeight(), datamodule=data)
    row = {
        "seconds": time.perf_counter() - start,
        "examples": len(data.train_data.examples),
        "rss_before": before,
        "rss_after": _memory_gb()[0],
        "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KB on Linux
        "preparations": len(preparations),
    }
    Path(config["output"], f"rank{trainer.global_rank}.json").write_text(json.dumps(row), encoding="utf-8")


def _child(flag: str, config: dict) -> str:
    """This script in a fresh process measuring one set-up; its stdout. A failed set-up stops with its error."""
    command = [sys.executable, __file__, flag, json.dumps(config)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{flag} failed ({config}):\n{result.stderr[-4000:]}")
    return result.stdout


def _setups(args: argparse.Namespace, base: dict, work: Path) -> list[tuple[str, dict]]:
    """``(label, config)`` per single-process set-up, in the order they run (the hit reuses the first miss's cache)."""
    from lit_align.data.datamodule import AlignDataModule

    num_procs = args.num_proc
    if num_procs and "num_proc" not in inspect.signature(AlignDataModule).parameters:
        print(f"AlignDataModule has no num_proc argument here: one first preparation instead of {num_procs}\n")
        num_procs = []
    misses = [(f"first preparation, num_proc {n}", {"num_proc": n}) for n in num_procs] or [("first preparation", {})]
    setups = [
        (f"{label} (cache miss)", {**base, **extra, "cache_dir": str(work / f"cache{i}")})
        for i, (label, extra) in enumerate(misses)
    ]
    setups.append(("cached start (hit)", setups[0][1]))
    if args.uncached:
        setups.append(("data.cache: false", {**base, "cache": False, "cache_dir": str(work / "unused")}))
    return setups


def _targets(label: str, row: dict, first_seconds: dict) -> tuple[str, str]:
    """The issue's target for this row and whether it was met (``yes``/``NO``; empty where none applies)."""

    def met(ok: bool) -> str:
        return "yes" if ok else "NO"

    if label.startswith("cached start"):
        growth = row["rss_peak"] - row["rss_before"]
        return "< 5 s; peak <= before + 0.3 GB", met(row["seconds"] < 5 and growth <= 0.3)
    if "num_proc 2" in label and "num_proc 1" in first_seconds:
        speedup = first_seconds["num_proc 1"] / row["seconds"]
        return f">= 1.7x faster than num_proc 1 ({speedup:.2f}x)", met(speedup >= 1.7)
    if label.startswith("2 DDP ranks, all"):
        return "1 preparation in all", met(row["preparations"] == 1)
    return "", ""


def _ddp_rows(base: dict, work: Path) -> list[tuple[str, dict]]:
    """Both ranks' rows of a 2-process DDP fit on an empty cache, then their sum (preparations) and the largest peak."""
    output = work / "ddp"
    output.mkdir()
    _child("--measure-ddp", {**base, "cache": True, "cache_dir": str(work / "cache_ddp"), "output": str(output)})
    ranks = [json.loads((output / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    total = {**max(ranks, key=lambda r: r["rss_peak"]), "preparations": sum(r["preparations"] for r in ranks)}
    return [(f"2 DDP ranks, rank {rank} (fit 1 step)", row) for rank, row in enumerate(ranks)] + [
        ("2 DDP ranks, all (largest peak)", total)
    ]


def cache_table(args: argparse.Namespace) -> None:
    """The ``--rows`` benchmark: one fresh process per set-up, a table of their times, memory and preparations."""
    work = Path(tempfile.mkdtemp(prefix="benchmark_data_"))
    data = work / "hh_synthetic.jsonl"
    synthetic_pairs(args.data_dir / SOURCES_HH, args.rows, data)
    base = {"path": str(data), "tokenizer": args.tokenizer, "max_length": args.max_length, "cache": True}
    print(
        f"{args.rows} synthetic HH-RLHF pairs ({data.stat().st_size / 2**20:.0f} MB), max_length {args.max_length}, "
        f"tokenizer {args.tokenizer}\n"
    )
    setups = _setups(args, base, work)  # says first if it cannot pass num_proc
    header = "| set-up | examples | seconds | run.json digest (s) | RSS before (GB) | after | peak | peak - before |"
    print(header + " preparations | target | met |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    first_seconds = {}

    def print_row(label: str, row: dict) -> None:
        target, met = _targets(label, row, first_seconds)
        digest = f"{row['digest_seconds']:.1f}" if "digest_seconds" in row else "-"
        cells = [label, row["examples"], f"{row['seconds']:.1f}", digest]
        cells += [f"{row[k]:.2f}" for k in ("rss_before", "rss_after", "rss_peak")]
        cells += [f"{row['rss_peak'] - row['rss_before']:+.2f}", row["preparations"], target, met]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)

    for label, config in setups:
        row = json.loads(_child("--measure-setup", config).strip().splitlines()[-1])
        if "num_proc" in config and "miss" in label:
            first_seconds[f"num_proc {config['num_proc']}"] = row["seconds"]
        print_row(label, row)
    size = sum(p.stat().st_size for p in (work / "cache0").rglob("*") if p.is_file())
    if args.ddp:
        for label, row in _ddp_rows(base, work):
            print_row(label, row)
    print(
        f"\ncache on disk: {size / 2**30:.2f} GB. seconds: setup() and the training sampler (DDP: the whole fit); "
        "peak: the process's high-water mark (DDP: ru_maxrss of the rank)"
    )
    shutil.rmtree(work)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--tokenizer", default=str(ROOT / "assets" / "tiny-chat"))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rows", type=int, help="measure the prepared-data cache on this many synthetic pairs")
    parser.add_argument("--uncached", action="store_true", help="with --rows: also a set-up with data.cache: false")
    parser.add_argument("--num-proc", type=int, nargs="*", default=[1, 2], help="with --rows: data.num_proc values")
    parser.add_argument("--no-ddp", dest="ddp", action="store_false", help="with --rows: skip the 2-rank DDP set-up")
    parser.add_argument("--measure-setup", help=argparse.SUPPRESS)  # the child process of --rows
    parser.add_argument("--measure-ddp", help=argparse.SUPPRESS)  # the DDP child of --rows (both ranks)
    args = parser.parse_args(argv)
    if args.measure_setup:
        print(json.dumps(measure_setup(json.loads(args.measure_setup))))
        return
    if args.measure_ddp:
        measure_ddp(json.loads(args.measure_ddp))
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
