"""Score a model's answers to gsm8k-style math questions: accuracy, pass@1 and pass@k, one JSONL line per question.

    python scripts/eval_math.py --model logs/sft/latest/hf --data ../shared/data/gsm8k.test.jsonl --limit 200
    python scripts/eval_math.py --model MODEL --data FILE --num_samples 8 --temperature 0.7   # pass@8

`--model` is a Hugging Face directory (or hub id): a full model, or a LoRA adapter directory (one with
`adapter_config.json`, such as a LoRA run's `hf/` export), loaded with PEFT on top of the base model it names.
Each question is asked through the tokenizer's chat template, the system prompt first (templates without a
system role get it at the top of the user turn). `--num_samples 1` decodes greedily; more samples are drawn with
`--temperature` and `--top_p`, and pass@k is the unbiased estimator of Chen et al. (2021) with k = num_samples.
Answers are checked by `lit_align.rewards` (the verifier GRPO rewards use), against the number after `####`.

Writes `samples.jsonl` (question, ground truth, completions, extracted answers, correct flags) and
`summary.json` (accuracy = mean correctness over all samples, pass@1, pass@k, settings) into `--output`, by
default the next free `logs/eval_math/N`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_align.checks import ConfigError  # noqa: E402
from lit_align.outputs import output_directory  # noqa: E402
from lit_align.rewards import answers_match, extract_answer, pass_at_k, reference_answer  # noqa: E402
from lit_align.tokenizer import check_model_path  # noqa: E402

# The gsm8k convention, so that a model that follows it is scored on its own final line; models that box their
# answer or end on the number are still read (see lit_align.rewards.extract_answer).
DEFAULT_SYSTEM_PROMPT = (
    "Solve the math problem step by step. Then write the final answer, a number only, on the last line after '####'."
)
DTYPES = ("auto", "float32", "bfloat16", "float16")


def read_questions(path: Path, limit: int | None) -> list[dict]:
    """``{"question", "answer"}`` records of a JSONL file; a bad line stops with its file, line and field."""
    if not path.is_file():
        raise SystemExit(f"--data: no such file: {path}")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if limit is not None and len(records) >= limit:
            break
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SystemExit(f"{path}:{number}: not valid JSON ({error.msg})") from None
        for field in ("question", "answer"):
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise SystemExit(f"{path}:{number}: field '{field}' is missing or not a string (gsm8k format)")
        records.append(record)
    if not records:
        raise SystemExit(f"--data: {path} holds no records")
    return records


def load_model(path: str, device: str, dtype: str):
    """The model (PEFT-wrapped when ``path`` is a LoRA adapter directory), in eval mode, and its tokenizer."""
    import torch

    from lit_align.models.trained import load_pretrained_dir

    trained = load_pretrained_dir(path, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
    return trained.model.to(device).eval(), trained.tokenizer


def prompt_ids(tokenizer, question: str, system_prompt: str) -> list[int]:
    """Token ids of the chat prompt for ``question``, ready for the assistant's turn."""
    messages = [{"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # templates such as Gemma's refuse a system turn
        if not system_prompt:
            raise
        merged = [{"role": "user", "content": f"{system_prompt}\n\n{question}"}]
        text = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def generate(model, tokenizer, prompts: list[list[int]], args: argparse.Namespace) -> list[list[str]]:
    """``args.num_samples`` completions per prompt, in batches of ``args.batch_size`` prompts."""
    import torch

    from lit_align.models.generation_inputs import eos_token_ids, left_pad

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = {"do_sample": False}
    if args.num_samples > 1:
        sampling = {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p}
    completions = []
    for start in range(0, len(prompts), args.batch_size):
        ids, mask = left_pad(prompts[start : start + args.batch_size], pad_id)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=args.max_new_tokens,
                num_return_sequences=args.num_samples,
                pad_token_id=pad_id,
                eos_token_id=eos_token_ids(model, tokenizer),
                **sampling,
            )
        texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
        # generate returns the samples of one prompt next to each other
        completions += [texts[i : i + args.num_samples] for i in range(0, len(texts), args.num_samples)]
        print(f"generated {min(start + args.batch_size, len(prompts))}/{len(prompts)} questions", flush=True)
    return completions


def score(records: list[dict], completions: list[list[str]], k: int) -> tuple[list[dict], dict]:
    """Per-question rows and the summary numbers: accuracy over all samples, mean pass@1 and pass@k."""
    rows = []
    for record, texts in zip(records, completions, strict=True):
        truth = reference_answer(record["answer"])
        answers = [extract_answer(text) for text in texts]
        correct = [answers_match(answer, truth) for answer in answers]
        rows.append(
            {"question": record["question"], "ground_truth": truth, "completions": texts, "answers": answers}
            | {"correct": correct}
        )
    flags = [flag for row in rows for flag in row["correct"]]
    n = len(completions[0])
    summary = {
        "accuracy": sum(flags) / len(flags),
        "pass@1": sum(pass_at_k(n, sum(row["correct"]), 1) for row in rows) / len(rows),
        f"pass@{k}": sum(pass_at_k(n, sum(row["correct"]), k) for row in rows) / len(rows),
    }
    return rows, summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hf model directory, LoRA adapter directory or hub id")
    parser.add_argument("--data", type=Path, required=True, help="JSONL with 'question' and 'answer' (gsm8k)")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--num_samples", type=int, default=1, help="completions per question; 1 = greedy")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (num_samples > 1)")
    parser.add_argument("--top_p", type=float, default=0.95, help="nucleus sampling threshold (num_samples > 1)")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8, help="questions per generate call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system_prompt", default=DEFAULT_SYSTEM_PROMPT, help="'' for no system prompt")
    parser.add_argument("--output", type=Path, help="directory to write (default: the next free logs/eval_math/N)")
    parser.add_argument("--overwrite", action="store_true", help="replace files already in --output")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, help="weights dtype (default: bfloat16 on cuda, float32 on cpu)")
    args = parser.parse_args(argv)
    for name in ("limit", "num_samples", "max_new_tokens", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    if args.temperature <= 0 or not 0 < args.top_p <= 1:
        parser.error("--temperature must be > 0 and --top_p in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    records = read_questions(args.data, args.limit)
    try:
        check_model_path(args.model, "--model")
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    output = output_directory(args.output, Path("logs") / "eval_math", args.overwrite)

    import torch
    from transformers import set_seed

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    set_seed(args.seed)
    model, tokenizer = load_model(args.model, device, dtype)
    started = time.perf_counter()
    prompts = [prompt_ids(tokenizer, record["question"], args.system_prompt) for record in records]
    completions = generate(model, tokenizer, prompts, args)
    rows, numbers = score(records, completions, args.num_samples)

    with (output / "samples.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    settings = {key: getattr(args, key) for key in ("num_samples", "max_new_tokens", "batch_size", "seed")}
    settings |= {"temperature": args.temperature if args.num_samples > 1 else None, "device": device}
    settings |= {"top_p": args.top_p if args.num_samples > 1 else None, "dtype": dtype}
    settings |= {"system_prompt": args.system_prompt, "limit": args.limit}
    summary = {"model": args.model, "data": str(args.data), "n": len(rows), **numbers, "settings": settings}
    summary["seconds"] = round(time.perf_counter() - started, 2)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    columns = {"questions": len(rows), "samples": args.num_samples, **numbers}  # pass@1 once when k = 1
    print("\n" + "".join(f"{name:>11}" for name in columns))
    print("".join(f"{value:>11}" if isinstance(value, int) else f"{value:>11.4f}" for value in columns.values()))
    print(f"wrote {output / 'samples.jsonl'} and {output / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
