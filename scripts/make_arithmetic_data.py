"""Write the arithmetic task of the RL quickstarts: ``What is 47 plus 5?``, answer ``52``.

Why this task: RL from verifiable rewards needs prompts whose answers a program can check, a model that gets some
of them right before RL starts (GRPO learns nothing from a group whose completions all score 0), and held-out
prompts it can get better at. Adding a one-digit number to a number below 100 fits the shipped tiny model: the
1,000 sums share ten one-digit addition facts and a carry rule, so a held-out sum (say 47 + 5) is made of skills
that training sums (37 + 5, 47 + 6, ...) exercise, and accuracy on held-out prompts can rise.

Files (deterministic for a given ``--seed``), in ``assets/arithmetic/``:

- ``train.jsonl`` and ``val.jsonl``: prompt-only records ``{"prompt": ..., "ground_truth": ...}`` for GRPO and
  expert iteration; ``val.jsonl`` holds ``--val`` sums that appear nowhere else.
- ``sft_train.jsonl`` and ``sft_val.jsonl``: the same sums as chats answered ``47 plus 5 equals 52.``, for the
  short supervised warm-up that produced ``assets/tiny-arith`` (``configs/quickstart/arithmetic_sft.yaml``).

    python scripts/make_arithmetic_data.py
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def sums(seed: int) -> list[tuple[int, int]]:
    """Every ``a + b`` with ``0 <= a < 100`` and ``0 <= b < 10``, shuffled by ``seed``."""
    pairs = [(a, b) for a in range(100) for b in range(10)]
    random.Random(seed).shuffle(pairs)
    return pairs


def question(a: int, b: int) -> str:
    return f"What is {a} plus {b}?"


def answer_sentence(a: int, b: int) -> str:
    return f"{a} plus {b} equals {a + b}."


def _chat(a: int, b: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question(a, b)},
            {"role": "assistant", "content": answer_sentence(a, b)},
        ]
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets/arithmetic", help="output directory")
    parser.add_argument("--val", type=int, default=128, help="held-out sums")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pairs = sums(args.seed)
    val, train = pairs[: args.val], pairs[args.val :]
    out = Path(args.out)
    write_jsonl(out / "train.jsonl", [{"prompt": question(a, b), "ground_truth": str(a + b)} for a, b in train])
    write_jsonl(out / "val.jsonl", [{"prompt": question(a, b), "ground_truth": str(a + b)} for a, b in val])
    for name, split in (("sft_train", train), ("sft_val", val)):
        write_jsonl(out / f"{name}.jsonl", [_chat(a, b) for a, b in split])
    print(f"wrote {len(train)} training and {len(val)} held-out sums to {out}/")


if __name__ == "__main__":
    main()
