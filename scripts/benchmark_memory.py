"""Measure memory and speed of DPO's reference choices, and SFT on the same tokens, on CPU.

    python scripts/benchmark_memory.py [--steps 30] [--warmup 3] [--batch-size 16] [--max-length 256]

Trains the built-in tiny model (``assets/tiny-chat``) on the DPO quickstart pairs (``assets/demo/dpo_train.jsonl``)
with the Lightning Trainer, as ``lit_align fit`` does, once per configuration:

- DPO, full fine-tuning: reference ``copy`` (a frozen second model) and ``precomputed``;
- DPO, LoRA: reference ``adapter_off`` (a second forward through the policy with the adapter off) and
  ``precomputed``;
- SFT, full and LoRA, on prompt + chosen of the same pairs.

Each configuration runs in a fresh subprocess, because the peak resident set size that ``getrusage`` reports is
the peak over the process's whole life. CPU tensors live in malloc'd memory, which ``tracemalloc`` does not see,
and torch's CPU allocator keeps no peak statistics, so memory is measured two ways, each as a difference from its
value just before ``trainer.fit`` (interpreter, libraries, tokenised data): so it covers the model loaded inside
``fit``, the reference, optimizer state and activations.

- ``RSS peak Δ``: ``ru_maxrss`` at the end, over the whole fit. Freed memory that malloc keeps for reuse still
  counts, so a one-off peak (the precomputed pass) stays in it.
- ``in use Δ``: the peak of glibc's ``mallinfo2`` in-use bytes (heap in use plus mmapped blocks: live tensors
  and Python objects), sampled every 2 ms by a thread, separately from the start of ``fit`` to the first batch
  (model loading, the reference copy, the precomputed pass) and over the training steps.

Tokens/s counts the non-pad tokens of a batch (chosen and rejected rows for DPO) over the time from the start of a
training batch to the end of its optimizer step, after ``--warmup`` untimed steps; the data loader is not timed.
``to 1st batch s`` is the time from the start of ``fit`` to the first batch (model loading, and the precomputed
pass over every training pair). The deltas also hold what the first forward and backward of any model cost
(libraries' lazy buffers), the same in every row: compare rows. ``--threads`` fixes torch's thread count; on a
machine shared with other jobs, tokens/s is only as steady as the machine.

Prints a table; nothing is asserted. The tiny model has 0.66M parameters (2.6 MB in float32), so a second copy of
its weights is small beside the activations and logits of a batch: on a real model the weights dominate and
``copy`` costs a whole model more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # lit_align from this checkout; measure.py beside this file

from measure import StepMeter, measure_fit, run_json  # noqa: E402

CONFIGURATIONS = {
    "dpo-full-copy": ("dpo", False, "copy"),
    "dpo-full-precomputed": ("dpo", False, "precomputed"),
    "dpo-lora-adapter_off": ("dpo", True, "adapter_off"),
    "dpo-lora-precomputed": ("dpo", True, "precomputed"),
    "sft-full": ("sft", False, None),
    "sft-lora": ("sft", True, None),
}


def run_configuration(name: str, args: argparse.Namespace) -> dict:
    """Train one configuration in this process; its measurements."""
    import torch

    from lit_align.data.datamodule import AlignDataModule, DataSource
    from lit_align.models import LoraSettings
    from lit_align.modules import PreferenceModule, SFTModule

    task, lora, reference = CONFIGURATIONS[name]
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="benchmark_memory_"))
    settings = {"lora": LoraSettings(r=16, alpha=32, dropout=0.0) if lora else None}
    if task == "dpo":
        cache = {"reference_cache_dir": str(workdir / "cache")} if reference == "precomputed" else {}
        module = PreferenceModule(args.model, reference=reference, **cache, **settings)
    else:
        module = SFTModule(args.model, **settings)
    data = AlignDataModule(
        [DataSource(str(args.data), format="preference")],
        tokenizer=args.model,
        task="preference" if task == "dpo" else "sft",
        max_length=args.max_length,
        batch_size=args.batch_size,
    )
    data.setup()
    if lora:
        import peft  # noqa: F401  (imported inside fit otherwise, and its import would count as training memory)
    row = measure_fit(module, data, StepMeter(args.warmup), workdir, max_steps=args.warmup + args.steps)
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "name": name,
        "threads": torch.get_num_threads(),
        **row,
        "reference_in_memory": getattr(getattr(module, "reference", None), "model", None) is not None,
    }


def measure(name: str, args: argparse.Namespace) -> dict:
    """``run_configuration`` in a fresh subprocess (its peak RSS is its own)."""
    command = [
        sys.executable, __file__, "--run", name, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
        "--model", str(args.model), "--data", str(args.data), "--threads", str(args.threads),
    ]  # fmt: skip
    return run_json(command, name, ROOT)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--model", default=str(ROOT / "assets" / "tiny-chat"))
    parser.add_argument("--data", type=Path, default=ROOT / "assets" / "demo" / "dpo_train.jsonl")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS))
    parser.add_argument("--run", choices=list(CONFIGURATIONS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_configuration(args.run, args)))
        return []

    print(f"{args.model} on CPU, {args.data.name}, batch {args.batch_size}, max_length {args.max_length}")
    print(f"{args.warmup} warm-up + {args.steps} timed steps; memory deltas from just before trainer.fit\n")
    print(
        "| configuration | reference model while training | RSS peak Δ MB | in use Δ MB, fit start to 1st batch "
        "| in use Δ MB, training steps | to 1st batch s | tokens/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    rows = []
    for name in args.configs:
        row = measure(name, args)
        rows.append(row)
        cells = [name, "yes" if row["reference_in_memory"] else "no", f"{row['rss_peak_delta_mb']:.0f}"]
        cells += [f"{row['setup_in_use_delta_mb']:.0f}", f"{row['train_in_use_delta_mb']:.0f}"]
        cells += [f"{row['setup_seconds']:.1f}", f"{row['tokens_per_second']:.0f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\ntorch threads: {rows[0]['threads'] if rows else '?'}")
    return rows


if __name__ == "__main__":
    main()
