"""lit_align's GRPO against TRL's GRPOTrainer: the loss on the same tokens, and training throughput.

    python scripts/benchmark_grpo.py --check-loss
    python scripts/benchmark_grpo.py [--rounds 5] [--steps 20] [--warmup 2] [--prompts-per-step 16]
        [--num-generations 8] [--max-completion-length 16] [--temperature 1] [--systems lit_align trl]
        [--threads 1] [--wait-idle S] [--output DIR] [--overwrite]

    # the default throughput run: about 5 minutes on 2 cores, one busy with another job (10 runs of 20-40 s)
    python scripts/benchmark_grpo.py --wait-idle 60

Loss parity (``--check-loss``, about 12 s). Three arithmetic prompts of different lengths, two hand-written
completions each (one cut at ``max_completion_length`` 16 without its end-of-turn token), hand-picked advantages,
and "old" and reference log-probs that are the model's own plus seeded noise (std 0.3), so the importance ratio is
off 1 and both clips (epsilon 0.2, epsilon_high 0.28) cut a share of the tokens. TRL 1.16 gets them as its trainer
lays them out (prompt left-padded, completion right-padded, ``old_per_token_logps``, ``ref_per_token_logps``,
``num_items_in_batch`` = the completion tokens, gradient accumulation 1) and computes ``GRPOTrainer._compute_loss``
on its model; lit_align lays the same tokens out as `completion_batch` does (prompt + completion per row,
right-padded), takes per-token log-probs from `label_token_logps` and applies `GRPOLoss` to a `RolloutLogps`, on
its own copy of the model. The table gives, per loss type and beta (0 and 0.04), both losses, ``abs Δloss``, and the
largest difference of any weight's gradient. Found: the two agree to float32 rounding (``Δloss`` < 1e-6, ``Δgrad``
~2e-6 against gradients up to 0.9) for grpo, bnpo, dr_grpo and dapo, with the KL term multiplied by the importance
ratio (``use_bias_correction_kl``, TRL 1.16's default and `GRPOLoss`'s) or not, and at a sampling temperature of
0.7 (both score ``softmax(logits / T)``, the distribution the completions come from). This check found that
`GRPOLoss` lacked the KL correction and that lit_align scored at T = 1; both were fixed.

Throughput (the default). ``lit_align`` (`GRPOModule` through a Lightning Trainer without logger or checkpoints)
and ``trl`` (GRPOTrainer) train the GRPO quickstart's model (``assets/tiny-arith``, a 2-layer Llama) on its
prompts, ``P`` prompts x ``G`` completions a step, with the settings `benchmark_grpo_systems` lists, each in a
fresh subprocess for ``--warmup`` untimed steps then ``--steps`` timed ones. Per system: seconds per step and, of
them, seconds in ``generate`` (medians over the timed steps, then over rounds), completion tokens per second (the
timed steps' completion tokens over their seconds), and the peak RSS from just before the model loads (`measure`).
``--rounds`` repeats everything, every system once per round in a rotated order; ``× TRL`` columns are lit_align's
value over TRL's, taken round by round, and their median. ``other jobs, cores`` is the most CPU other processes used
during one of the system's runs (0 is a clean run); ``--wait-idle S`` waits up to S seconds for an idle machine
before each run. Torch gets one thread unless ``--threads`` says otherwise: with another job busy on one of 2
cores, two threads wait on each other and a step took 4.3 s instead of 0.6 s. On a CPU, TRL 1.16's fused head
scores every position (prompt and padding too) and computes entropy beside the log-probs, without Triton; on a GPU
it scores completion positions only, so these ratios say nothing about GPU speed. The two policies sample
different completions (each run is seeded, so a system samples the same ones every round), hence tokens/s beside
s/step. Writes ``benchmark_grpo.json`` (every run and the summary) and ``benchmark_grpo.md`` into ``--output``
(default the next free ``logs/benchmark_grpo/N``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # lit_align from this checkout; helpers beside this file

from benchmark import median_of_ratios  # noqa: E402
from benchmark_grpo_systems import SYSTEMS, run_system, trl_config  # noqa: E402
from measure import by_round, interleaved_rounds, median_rows  # noqa: E402

from lit_align.outputs import output_directory  # noqa: E402

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
PARITY_GROUPS = (  # prompt, then its completions; the last is longer than max_completion_length: cut, no end token
    ("What is 5 plus 3?", "The answer is 8.", "8"),
    ("What is 47 plus 38?", "47 plus 38 is 85.", "85"),
    ("Please add 7 and 12, then tell me the sum.", "19", "Seven and twelve make nineteen, so the sum is 19."),
)
PARITY_ADVANTAGES = (1.2, -0.7, 0.9, -1.5, 0.4, -0.3)
PARITY_MAX_COMPLETION = 16
PARITY_CASES = [(loss_type, beta, True, 1.0) for loss_type in LOSS_TYPES for beta in (0.0, 0.04)]
PARITY_CASES += [(loss_type, 0.04, False, 1.0) for loss_type in LOSS_TYPES]
PARITY_CASES += [("dapo", 0.04, True, 0.7), ("grpo", 0.0, True, 0.7)]
"""(loss_type, beta, use_bias_correction_kl, temperature): both sides get the same settings; the KL correction (TRL's
default, lit_align's too) on and off, and a sampling temperature other than 1, under which both score
``softmax(logits / T)``."""


def check_loss(model: str, threads: int = 1) -> list[dict]:
    """For each of `PARITY_CASES`: lit_align's loss and TRL's on the same tokens, and their gradients' largest
    difference (see the module docstring), on ``threads`` torch threads (0: torch's default)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _check_loss(model)
    finally:
        torch.set_num_threads(previous)


def _check_loss(model: str) -> list[dict]:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM

    from lit_align.losses import GRPOLoss, RolloutLogps
    from lit_align.models.label_logps import label_token_logps

    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    ours, theirs = _parity_batches(model, policy)
    rows = []
    for loss_type, beta, kl_times_ratio, temperature in PARITY_CASES:
        settings = {
            "loss_type": loss_type, "beta": beta, "epsilon": 0.2, "epsilon_high": 0.28,
            "use_bias_correction_kl": kl_times_ratio,
        }  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="grpo_parity_") as workdir:
            trainer = _trl_trainer(model, workdir, {**settings, "temperature": temperature})
            their_loss = trainer._compute_loss(trainer.model, theirs)
            their_loss.backward()
        policy.zero_grad(set_to_none=True)
        logps = label_token_logps(policy, ours["labels"], ours["model_inputs"], temperature=temperature)[0]
        our_loss, metrics = GRPOLoss(**settings)(RolloutLogps(logps=logps, **ours["rollout"]))
        our_loss.backward()
        their_grads = dict(trainer.model.named_parameters())
        rows.append({
            **settings,
            "temperature": temperature,
            "lit_align_loss": our_loss.item(),
            "trl_loss": their_loss.item(),
            "loss_abs_diff": abs(our_loss.item() - their_loss.item()),
            "grad_max_abs_diff": max(
                (p.grad - their_grads[name].grad).abs().max().item() for name, p in policy.named_parameters()
            ),
            "grad_max_abs": max(p.grad.abs().max().item() for p in policy.parameters()),
            "clipped_fraction": metrics["clip_ratio/region_mean"].item(),
        })  # fmt: skip
    return rows


def _parity_batches(model: str, policy) -> tuple[dict, dict]:
    """`PARITY_GROUPS` laid out as lit_align lays them out and as TRL does, with the same advantages and the same
    old and reference log-probs: the policy's own plus seeded noise (std 0.3), so the ratio is off 1."""
    import torch
    from transformers import AutoTokenizer

    from lit_align.data.tokenize import tokenize_prompt
    from lit_align.models.label_logps import label_token_logps
    from lit_align.rollouts.generation import Completions, completion_batch

    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts, completions, truncated = [], [], []
    for prompt, *answers in PARITY_GROUPS:
        prompts.append(tokenize_prompt(tokenizer, [{"role": "user", "content": prompt}]))
        for answer in answers:
            ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            completions.append(ids[:PARITY_MAX_COMPLETION])
            truncated.append(len(ids) > PARITY_MAX_COMPLETION)
    group_size = len(PARITY_GROUPS[0]) - 1
    sequences = completion_batch(prompts, Completions(completions, truncated, group_size), tokenizer.pad_token_id)
    our_mask = sequences.labels[:, 1:] != -100
    theirs = _trl_layout([prompts[i // group_size] for i in range(len(completions))], completions, tokenizer)
    their_mask = theirs["completion_mask"].bool()
    with torch.no_grad():
        current = label_token_logps(policy, sequences.labels, sequences.model_inputs())[0][our_mask]
    noise = torch.Generator().manual_seed(0)
    old, ref = (current + 0.3 * torch.randn(current.shape, generator=noise) for _ in range(2))
    advantages = torch.tensor(PARITY_ADVANTAGES)
    theirs.update(advantages=advantages, num_items_in_batch=their_mask.sum())
    theirs.update(old_per_token_logps=_scatter(old, their_mask), ref_per_token_logps=_scatter(ref, their_mask))
    rollout = {"mask": our_mask.float(), "advantages": advantages, "max_completion_length": PARITY_MAX_COMPLETION}
    rollout.update(old_logps=_scatter(old, our_mask), ref_logps=_scatter(ref, our_mask))
    ours = {"labels": sequences.labels, "model_inputs": sequences.model_inputs(), "rollout": rollout}
    return ours, theirs


def _scatter(values, mask):
    """``values`` (one per completion token, row-major) into a zero tensor shaped like ``mask``, at its ones."""
    import torch

    out = torch.zeros(mask.shape, dtype=values.dtype)
    out[mask] = values
    return out


def _trl_layout(prompts: list[list[int]], completions: list[list[int]], tokenizer) -> dict:
    """TRL's batch layout: prompts left-padded, completions right-padded, with their masks."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    batch = {}
    for name, rows, side in (("prompt", prompts, "left"), ("completion", completions, "right")):
        tensors = [torch.tensor(row) for row in rows]
        pad = {"batch_first": True, "padding_side": side}
        batch[f"{name}_ids"] = pad_sequence(tensors, padding_value=tokenizer.pad_token_id, **pad)
        batch[f"{name}_mask"] = pad_sequence([torch.ones_like(t) for t in tensors], padding_value=0, **pad)
    return batch


def _trl_trainer(model: str, workdir: str, settings: dict):
    """A GRPOTrainer on ``model`` for calling ``_compute_loss`` directly, outside its training loop."""
    import datasets
    from trl import GRPOTrainer

    config = trl_config(
        workdir, per_device_train_batch_size=2, num_generations=2, max_completion_length=PARITY_MAX_COMPLETION,
        **settings,
    )  # fmt: skip
    prompts = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "1 + 1?"}]}] * 2)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
                          args=config, train_dataset=prompts)  # fmt: skip
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which does not run here
    trainer.model.train()  # _compute_loss scales for training only in train mode
    return trainer


def render_parity(rows: list[dict]) -> str:
    lines = [
        "GRPO loss on the same tokens: lit_align (label_token_logps + GRPOLoss) and TRL "
        "(GRPOTrainer._compute_loss), epsilon 0.2, epsilon_high 0.28, old log-probs off the policy's; KL × ratio: "
        "use_bias_correction_kl (the default of both), T: the sampling temperature both score under.",
        "",
        "| loss_type | beta | KL × ratio | T | lit_align loss | TRL loss | abs Δloss | max abs Δgrad | max abs grad "
        "| clipped tokens |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [row["loss_type"], f"{row['beta']:g}", "yes" if row["use_bias_correction_kl"] else "no"]
        cells.append(f"{row['temperature']:g}")
        cells += [f"{row['lit_align_loss']:.7f}", f"{row['trl_loss']:.7f}"]
        cells += [f"{row[key]:.1e}" for key in ("loss_abs_diff", "grad_max_abs_diff", "grad_max_abs")]
        cells.append(f"{row['clipped_fraction']:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


MEDIANS = ("seconds_per_step", "generation_seconds_per_step", "completion_tokens_per_second", "rss_peak_delta_mb")


def summarise(runs: list[dict], systems: list[str]) -> list[dict]:
    """One row per system: medians over rounds; for lit_align, ``vs_trl_<key>`` medians of per-round ratios."""
    rows = median_rows(runs, systems, MEDIANS)
    for row in rows:
        if row["system"] != "trl" and "skipped" not in row:
            for key in MEDIANS:
                mine, theirs = by_round(runs, row["system"], key), by_round(runs, "trl", key)
                row[f"vs_trl_{key}"] = median_of_ratios(mine, theirs)
    return rows


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[dict], settings: dict, prompt_match: tuple[int, int] | None = None) -> str:
    lines = [
        f"{Path(settings['model']).name}, {Path(settings['data']).name}, {settings['prompts_per_step']} prompts x "
        f"{settings['num_generations']} completions a step, max_completion_length {settings['max_completion_length']}, "
        f"temperature {settings['temperature']}, dapo, beta 0, {settings['warmup']} warm-up + {settings['steps']} "
        f"timed steps, {settings['rounds']} rounds, torch threads {settings['threads']}. Medians over rounds; "
        "× TRL is lit_align's value over TRL's, the median of per-round ratios.",
        "",
        "| system | s/step | of it generate, s | completion tokens/s | RSS peak Δ MB | s/step × TRL "
        "| tokens/s × TRL | RSS × TRL | other jobs, cores (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['system']} | skipped: {row['skipped']} | | | | | | | |")
            continue
        cells = [row["system"], f"{row['seconds_per_step']:.2f}", f"{row['generation_seconds_per_step']:.2f}"]
        cells += [f"{row['completion_tokens_per_second']:.0f}", f"{row['rss_peak_delta_mb']:.0f}"]
        cells += [
            _cell(row.get(f"vs_trl_{key}"), ".2f")
            for key in ("seconds_per_step", "completion_tokens_per_second", "rss_peak_delta_mb")
        ]
        cells.append(f"{row['other_cpu_cores_max']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if prompt_match is not None:
        lines += ["", "TRL's prompt tokens are lit_align's (same records, same chat template) in "
                  f"{prompt_match[0]} of {prompt_match[1]} steps."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _prompt_match(runs: list[dict]) -> tuple[int, int] | None:
    """TRL's steps whose prompt tokens were lit_align's, and the steps checked (None without a TRL run)."""
    checked = [run for run in runs if "steps_checked" in run]
    if not checked:
        return None
    return sum(run["steps_with_lit_align_prompt_tokens"] for run in checked), sum(
        run["steps_checked"] for run in checked
    )


def _run_command(name: str, round_index: int, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, __file__, "--run", name, "--round", str(round_index), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--prompts-per-step", str(args.prompts_per_step),
        "--num-generations", str(args.num_generations), "--max-completion-length", str(args.max_completion_length),
        "--temperature", str(args.temperature), "--model", str(args.model), "--data", str(args.data),
        "--threads", str(args.threads), "--seed", str(args.seed),
    ]  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-loss", action="store_true", help="compare the loss and its gradients with TRL's")
    parser.add_argument("--rounds", type=int, default=5, help="every system once per round, in a rotated order")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    parser.add_argument("--prompts-per-step", type=int, default=16, help="prompts per step (P)")
    parser.add_argument("--num-generations", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--model", default=str(ROOT / "assets" / "tiny-arith"))
    parser.add_argument("--data", type=Path, default=ROOT / "assets" / "arithmetic" / "train.jsonl")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--wait-idle", type=float, default=0, help="before each run, wait up to this many seconds "
                        "for other processes to leave the CPU idle")  # fmt: skip
    parser.add_argument("--output", type=Path, help="where to write (default: the next free logs/benchmark_grpo/N)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --output")
    parser.add_argument("--run", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.run:
        print(json.dumps({"system": args.run, "round": args.round, **run_system(args.run, args)}))
        return {}
    if args.check_loss:
        rows = check_loss(args.model, args.threads)
        print(render_parity(rows))
        return {"loss_parity": rows}
    out = output_directory(args.output, ROOT / "logs" / "benchmark_grpo", args.overwrite).resolve()
    runs = interleaved_rounds(
        args.systems,
        args.rounds,
        lambda name, round_index: _run_command(name, round_index, args),
        ROOT,
        lambda run: f"{run['seconds_per_step']:.2f} s/step",
        args.wait_idle,
    )
    rows = summarise(runs, args.systems)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    settings["threads"] = next((run["threads"] for run in runs if "threads" in run), args.threads)
    prompt_match = _prompt_match(runs)
    report = {"settings": settings, "summary": rows, "trl_prompt_tokens_match": prompt_match, "runs": runs}
    (out / "benchmark_grpo.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = render(rows, settings, prompt_match)
    (out / "benchmark_grpo.md").write_text(table, encoding="utf-8")
    print(f"\n{table}\nwritten to {out}")
    return report


if __name__ == "__main__":
    main()
