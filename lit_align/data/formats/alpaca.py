"""Alpaca rows: ``instruction``, ``input``, ``output`` plus optional ``system`` and ``history``.

The user turn is the instruction, followed by the input after a blank line when the input is non-empty.
``history`` holds earlier ``[user, assistant]`` pairs that come before it. Three shapes of answer:

* ``output`` a string: one SFT record.
* ``output`` a list of strings ranked best first (LLaMA-Factory ``ranking: true``, e.g. ``oaast_rm_zh``):
  preference pairs. ``ranking_pairs="best_vs_rest"`` pairs the best answer with each other one (n-1 pairs,
  every pair has the clearest margin); ``"adjacent"`` pairs neighbours (n-1 pairs, finer distinctions,
  each answer but the ends used twice).
* ``chosen``/``rejected`` strings (LLaMA-Factory's preference alpaca): one preference pair.
"""

from __future__ import annotations

from lit_align.data.errors import FieldError, SkipRecord
from lit_align.data.formats._fields import (
    check_type,
    join_prompt,
    message,
    optional,
    pairs_history,
    preference_record,
    require,
    sft_record,
)

RANKING_PAIRS = ("best_vs_rest", "adjacent")


def convert(row: dict, *, ranking_pairs: str = "best_vs_rest") -> list[dict]:
    """Return one SFT record or the preference pairs of the row."""
    if ranking_pairs not in RANKING_PAIRS:
        raise ValueError(f"ranking_pairs must be one of {RANKING_PAIRS}, got {ranking_pairs!r}")
    prompt = prompt_messages(row)
    if "chosen" in row or "rejected" in row:
        chosen = require(row, "chosen", str)
        rejected = require(row, "rejected", str)
        return [_pair(prompt, chosen, rejected)]
    output = require(row, "output", (str, list))
    if isinstance(output, str):
        return [sft_record([*prompt, message("assistant", output)], "output")]
    answers = [check_type(a, str, f"output[{i}]") for i, a in enumerate(output)]
    if len(answers) < 2:
        raise SkipRecord("ranking_needs_two_outputs")
    if ranking_pairs == "adjacent":
        return [_pair(prompt, better, worse) for better, worse in zip(answers, answers[1:], strict=False)]
    return [_pair(prompt, answers[0], worse) for worse in answers[1:]]


def prompt_messages(row: dict) -> list[dict]:
    """System, history turns and the instruction(+input) user turn; shared with the COIG reader."""
    if "instruction" not in row and "input" not in row:
        raise FieldError("instruction", "missing")
    instruction = optional(row, "instruction", str, "")
    extra = optional(row, "input", str, "")
    if not instruction.strip() and not extra.strip():
        raise FieldError("instruction", "both instruction and input are empty")
    system = optional(row, "system", str, "")
    history = pairs_history(row["history"]) if row.get("history") is not None else []
    user = join_prompt(instruction, extra) if instruction.strip() else extra
    head = [message("system", system)] if system.strip() else []
    return [*head, *history, message("user", user)]


def _pair(prompt: list[dict], chosen: str, rejected: str) -> dict:
    return preference_record(
        prompt, [message("assistant", chosen)], [message("assistant", rejected)], ("instruction", "chosen", "rejected")
    )
