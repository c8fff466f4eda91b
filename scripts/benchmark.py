"""Training throughput, padding and peak memory of lit_align's DPO against TRL's DPOTrainer and a bare PyTorch loop.

    python scripts/benchmark.py [--rounds 3] [--steps 4] [--warmup 1] [--batch-size 8] [--max-length 512]
        [--systems ...] [--pairs N] [--vocab V] [--threads T] [--wait-idle S] [--output DIR] [--overwrite]

    # throughput on the tiny model: about 10 minutes on 2 idle cores
    python scripts/benchmark.py --rounds 3 --steps 4 --warmup 1 --pairs 256 --wait-idle 120
    # memory with a Qwen-sized vocabulary: about 10 minutes (TRL's steps take a minute each on a CPU)
    python scripts/benchmark.py --vocab 151936 --rounds 2 --batch-size 4 --max-length 512 --steps 2 --warmup 1 \
        --pairs 64 --systems lit_align-padded lit_align-packed lit_align-packed-adapter_off \
        lit_align-packed-precomputed trl bare

What runs. The same saved model (default ``assets/tiny-chat``: a 2-layer Llama, hidden size 128, vocabulary 1915),
the same pairs (the HH-RLHF harmless-base sample, ``../shared/data/hh_rlhf_harmless_base.test.jsonl``, whole
"Human:/Assistant:" transcripts read with format auto), the same batch size in pairs and maximum length, in float32,
the DPO quickstart's AdamW settings and gradient clipping, DPO sigmoid with beta 0.1 (`benchmark_systems`), by:

- ``lit_align-padded``: `PreferenceModule`, full fine-tuning, a frozen reference copy, padded batches;
- ``lit_align-packed``: the same with ``data.packing`` (skipped, and said so, by a lit_align without it);
- ``lit_align-packed-adapter_off``: LoRA r=8 on every linear layer, the reference is the policy with its adapter off;
- ``lit_align-packed-precomputed``: full fine-tuning, reference log-probs scored once before training (untimed);
- ``sft-packed``: `SFTModule` on prompt + chosen of the same pairs;
- ``trl``: TRL 1.16's DPOTrainer (``pip install '.[bench]'``; skipped without it), gradient checkpointing off;
- ``bare``: a plain loop over lit_align's own batches calling lit_align's own log-prob function, so its gap to
  ``lit_align-padded`` is framework overhead (Lightning, logging, the module's non-finite checks), not math.

How. Each system runs in a fresh subprocess (peak RSS is per process) for ``--warmup`` untimed steps, then
``--steps`` timed ones. A step is timed from the start of its batch to the end of its optimizer step; tokens/s is
the timed steps' non-pad tokens (chosen and rejected rows; attention-mask ones) over their time. Padding is
``1 - non-pad tokens / positions the forward processed``. Memory is measured from just before the model loads
(`measure`): ``RSS peak Δ`` over the whole run (model, reference, a precomputed pass, optimizer state,
activations), ``in use Δ`` the peak of malloc's in-use bytes during the training steps alone. ``--rounds`` repeats
everything, each round running every system once in a rotated order, so slow spells of a shared machine fall on
different systems; the table shows medians over rounds.

Reading the table. ``× TRL`` and ``× bare`` are the lit_align row's tokens/s divided by TRL's or bare's, taken
round by round, and their median (never one timing against another round's); ``RSS × TRL`` likewise for peak
memory. Below it, ``DPO precomputed / SFT`` is the same median ratio for the target "DPO with a precomputed
reference runs at ≥ 0.9× SFT's tokens/s". TRL draws random batches and lit_align length-bucketed ones, so their
padding differs; tokens/s counts real tokens only, so that difference shows as speed. ``--vocab V`` first writes a
copy of the model with its vocabulary grown to ``V`` (seeded random rows, tokenizer unchanged, so every token id
stays valid) into the output folder and benchmarks that: the output head then dominates memory, which is the
column to read (the issue's numbers: 4 pairs × 512 tokens, one step, lit_align 10.1 GB, TRL 4.7 GB; target
lit_align ≤ 0.5× TRL). Each step then takes seconds on a CPU, hence few steps, and ``--pairs`` keeps the
precomputed reference's untimed pass over the data short.

Caveats. Nothing is asserted. A CPU shared with other jobs makes timings noisy (another test run on 2 cores slowed
steps down up to 8×): interleaving and medians soften that; ``other jobs, cores`` shows, for each system, the most
CPU that other processes used during one of its runs (0 is a clean run), and ``--wait-idle S`` waits up to S seconds
before each run for the machine to be idle. ``--threads`` fixes torch's thread count. On a CPU, TRL 1.16 has no
Triton: its fused head then scores every position, padding included, and computes entropy and top-1 metrics beside
the log-probs, in 4096 × 32768 float32 tiles; on a GPU it scores label positions with Triton kernels, so the TRL
ratios here say nothing about GPU speed. lit_align runs through the Trainer without logger or checkpoints, as
`benchmark_memory.py` does, not through ``lit_align fit``. Memory deltas include what the first forward and backward
of any model cost (libraries' lazy buffers) and, for TRL, its tokenisation of the pairs, which happens after the
model loads. Writes ``benchmark.json`` (every run and the summary) and
``benchmark.md`` (the table) into ``--output`` (default the next free ``logs/benchmark/N``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # lit_align from this checkout; measure.py beside this file

from benchmark_systems import SYSTEMS, run_system  # noqa: E402
from measure import by_round as measure_by_round  # noqa: E402
from measure import interleaved_rounds, median_rows  # noqa: E402

from lit_align.outputs import output_directory  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh_rlhf_harmless_base.test.jsonl"
BASELINES = ("trl", "bare")


def median_of_ratios(numerators: dict[int, float], denominators: dict[int, float]) -> float | None:
    """Median over the rounds both systems ran of ``numerator / denominator`` (``None`` when there is none).

    Per-round ratios compare runs made side by side on the machine; a ratio of medians can pair a fast round of
    one system with a slow round of the other."""
    ratios = [numerators[r] / denominators[r] for r in sorted(set(numerators) & set(denominators)) if denominators[r]]
    return statistics.median(ratios) if ratios else None


def summarise(runs: list[dict], systems: list[str]) -> tuple[list[dict], float | None]:
    """One row per system (medians over rounds, ratios as medians of per-round ratios), and DPO precomputed / SFT."""

    def by_round(name: str, key: str) -> dict[int, float]:
        return measure_by_round(runs, name, key)

    keys = ("tokens_per_second", "padding_fraction", "rss_peak_delta_mb", "train_in_use_delta_mb")
    rows = median_rows(runs, systems, keys)
    for row in rows:
        name = row["system"]
        if name.startswith("lit_align") and "skipped" not in row:
            for baseline in BASELINES:
                row[f"vs_{baseline}"] = median_of_ratios(
                    by_round(name, "tokens_per_second"), by_round(baseline, "tokens_per_second")
                )
            rss = by_round(name, "rss_peak_delta_mb")
            row["rss_vs_trl"] = median_of_ratios(rss, by_round("trl", "rss_peak_delta_mb"))
    precomputed_over_sft = median_of_ratios(
        by_round("lit_align-packed-precomputed", "tokens_per_second"), by_round("sft-packed", "tokens_per_second")
    )
    return rows, precomputed_over_sft


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[dict], precomputed_over_sft: float | None, settings: dict, token_match: dict | None) -> str:
    lines = [
        f"{settings['model']}, {Path(settings['data']).name}, batch {settings['batch_size']} pairs, max_length "
        f"{settings['max_length']}, {settings['warmup']} warm-up + {settings['steps']} timed steps, "
        f"{settings['rounds']} rounds, torch threads {settings['threads']}. Medians over rounds; ratios are medians "
        "of per-round ratios.",
        "",
        "| system | tokens/s | padding | RSS peak Δ MB | in use Δ MB, steps | × TRL | × bare | RSS × TRL "
        "| other jobs, cores (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['system']} | skipped: {row['skipped']} | | | | | | | |")
            continue
        cells = [row["system"], f"{row['tokens_per_second']:.0f}", f"{row['padding_fraction']:.1%}"]
        cells += [f"{row['rss_peak_delta_mb']:.0f}", f"{row['train_in_use_delta_mb']:.0f}"]
        cells += [_cell(row.get(key), ".2f") for key in ("vs_trl", "vs_bare", "rss_vs_trl", "other_cpu_cores_max")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"DPO precomputed / SFT tokens/s: {_cell(precomputed_over_sft, '.2f')} (target ≥ 0.9)"]
    if token_match:
        lines.append(
            f"TRL's tokens vs lit_align's: {token_match['same_ids']} of {token_match['pairs']} pairs identical ids, "
            f"{token_match['same_ids_and_completion']} also identical completion tokens, "
            f"{token_match['same_lengths']} identical lengths."
        )
    return "\n".join(lines) + "\n"


def grow_vocabulary(model: str, size: int, directory: Path) -> Path:
    """A copy of ``model`` with ``size`` embedding rows (new rows random, seed 0; tied head alike) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = directory / f"{Path(model).name}-vocab{size}"
    torch.manual_seed(0)
    grown = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    if size < grown.get_input_embeddings().weight.shape[0]:
        raise SystemExit(f"--vocab {size} is smaller than the model's vocabulary: token ids would not stay valid")
    grown.resize_token_embeddings(size, mean_resizing=False)
    grown.save_pretrained(target)
    AutoTokenizer.from_pretrained(model).save_pretrained(target)
    return target


def _first_pairs(data: Path, count: int, directory: Path) -> Path:
    target = directory / f"pairs-{count}.jsonl"
    with data.open(encoding="utf-8") as source:
        target.write_text("".join(line for _, line in zip(range(count), source, strict=False)), encoding="utf-8")
    return target


def _run_command(name: str, round_index: int, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, __file__, "--run", name, "--round", str(round_index), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
        "--model", str(args.model), "--data", str(args.data), "--threads", str(args.threads), "--seed", str(args.seed),
    ]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="every system once per round, in a rotated order")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--vocab", type=int, help="benchmark a copy of the model with its vocabulary grown to this")
    parser.add_argument("--pairs", type=int, help="use only the first N pairs of --data")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--model", default=str(ROOT / "assets" / "tiny-chat"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--wait-idle", type=float, default=0, help="before each run, wait up to this many seconds "
                        "for other processes to leave the CPU idle")  # fmt: skip
    parser.add_argument("--output", type=Path, help="where to write (default: the next free logs/benchmark/N)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    parser.add_argument("--run", choices=list(SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.run:
        print(json.dumps({"system": args.run, "round": args.round, **run_system(args.run, args)}))
        return {}
    out = output_directory(args.output, ROOT / "logs" / "benchmark", args.overwrite).resolve()
    if args.pairs:
        args.data = _first_pairs(args.data, args.pairs, out)
    if args.vocab:
        args.model = str(grow_vocabulary(args.model, args.vocab, out))
    runs = interleaved_rounds(
        args.systems,
        args.rounds,
        lambda name, round_index: _run_command(name, round_index, args),
        ROOT,
        lambda run: f"{run['tokens_per_second']:.0f} tokens/s",
        args.wait_idle,
    )
    rows, precomputed_over_sft = summarise(runs, args.systems)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    settings["threads"] = next((run["threads"] for run in runs if "threads" in run), args.threads)
    token_match = next((run["token_match"] for run in runs if "token_match" in run), None)
    report = {"settings": settings, "summary": rows, "dpo_precomputed_over_sft": precomputed_over_sft}
    report.update(token_match=token_match, runs=runs)
    (out / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = render(rows, precomputed_over_sft, settings, token_match)
    (out / "benchmark.md").write_text(table, encoding="utf-8")
    print(f"\n{table}\nwritten to {out}")
    return report


if __name__ == "__main__":
    main()
