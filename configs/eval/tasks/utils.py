"""Python that the task YAMLs in this folder name with ``!function utils.<name>`` (lm-eval imports this file)."""

from __future__ import annotations

import re

from lit_align.rewards import answer_reward

_STRICT = re.compile(r"####\s*\$?\s*-?[0-9][0-9,]*(\.[0-9]+)?\s*\.?\s*$")


def process_gsm8k_chat(doc: dict, results: list[str]) -> dict[str, float]:
    """``exact_match``: the verifier's verdict on the completion against the record's ``#### N``;
    ``strict_format``: whether the completion ends in ``#### <number>`` as asked."""
    completion = results[0]
    return {
        "exact_match": answer_reward(completion, doc["answer"]),
        "strict_format": float(bool(_STRICT.search(completion.strip()))),
    }
