"""Registry of row converters and the key-based format detection used by ``format="auto"``.

Each format module exposes ``convert(row, **options) -> list[dict]``, returning internal SFT, preference or
prompt records without ``source``/``lang``/``row`` (the reader adds those). Detection looks only at the keys and
value types of the first row, so its rules are ordered from the most specific schema to the most generic:
UltraFeedback rows are also valid TRL preference rows, and ShareGPT preference rows also hold a plain
``conversations`` list, so the richer reading has to be tried first.
"""

from __future__ import annotations

from collections.abc import Callable

from lit_align.data.errors import FieldError
from lit_align.data.formats import (
    alpaca,
    coig,
    hh_rlhf,
    messages,
    oasst,
    pku_saferlhf,
    preference,
    prompt,
    qa,
    sharegpt,
    shp,
    ultrafeedback,
)
from lit_align.data.formats._fields import PROMPT_END_ROLES

FORMATS: dict[str, Callable[..., list[dict]]] = {
    "messages": messages.convert,
    "sharegpt": sharegpt.convert,
    "alpaca": alpaca.convert,
    "coig": coig.convert,
    "qa": qa.convert,
    "preference": preference.convert,
    "hh_rlhf": hh_rlhf.convert,
    "ultrafeedback": ultrafeedback.convert,
    "shp": shp.convert,
    "pku_saferlhf": pku_saferlhf.convert,
    "oasst": oasst.convert,
    "prompt": prompt.convert,
}


def detect_format(row: dict) -> str:
    """Return the name of the format in `FORMATS` that reads `row`, judged by its keys.

    A row with both ``messages`` and ``chosen``/``rejected`` is a preference row (TRL's reading; `tie_note`
    tells the user). A ``prompt``, or ``messages`` ending with a user turn, beside a ground-truth column is a prompt
    row; GSM8K's ``question``/``answer`` stays ``qa`` (task ``prompt`` reads it as prompt data all the same).
    Raises FieldError (field None) when no rule matches, listing the keys that were seen.
    """
    keys = set(row)
    if ("message_tree_id" in keys and isinstance(row.get("prompt"), dict)) or {"message_id", "text"} <= keys:
        return "oasst"
    if {"chosen", "rejected", "score_chosen", "score_rejected"} <= keys:
        return "ultrafeedback"
    if {"human_ref_A", "human_ref_B"} <= keys:
        return "shp"
    if {"response_0", "response_1"} <= keys:
        return "pku_saferlhf"
    if _is_hh_transcript(row):
        return "hh_rlhf"
    if _is_prompt_row(row):
        return "prompt"
    if "conversations" in keys:
        turns = row["conversations"]
        first = turns[0] if isinstance(turns, list) and turns else {}
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    # Before `messages`: rows that hold both are preference rows to TRL, and `tie_note` says so to the user.
    if {"chosen", "rejected"} <= keys:
        return "alpaca" if "instruction" in keys else "preference"
    if "messages" in keys:
        return "messages"
    if "output" in keys and ({"instruction", "input"} & keys):
        return "coig" if "task_type" in keys else "alpaca"
    if {"question", "answer"} <= keys or {"query", "response"} <= keys:
        return "qa"
    raise FieldError(None, f"cannot detect the data format from the row keys {sorted(keys)}")


def tie_note(row: dict, format: str) -> str | None:
    """What to tell the user when `row` could be read two ways and ``auto`` picked `format` (None: no tie)."""
    if "messages" in row and {"chosen", "rejected"} <= set(row):
        return (
            f"rows have both 'messages' and prompt/chosen/rejected: reading them as '{format}' (as TRL does); "
            "set format: messages to train on 'messages' instead"
        )
    return None


def declared_format_hint(row: dict, format: str) -> str:
    """For a row that `format` (given by the user) cannot read: which format it looks like, and how to set it."""
    try:
        detected = detect_format(row)
    except FieldError:
        return ""
    # `prompt` reads every SFT layout itself and names preference rows in its own error: no other format fixes it.
    if detected == format or format == "prompt":
        return ""
    return f"; the rows look like '{detected}' data, not '{format}': set format: {detected} (or format: auto)"


def _is_prompt_row(row: dict) -> bool:
    """A prompt (or messages ending with a user turn) and a ground-truth column, and no preference pair."""
    if "chosen" in row or "rejected" in row or not prompt.has_ground_truth(row):
        return False
    if "prompt" in row:
        return True
    messages = row.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    return isinstance(last, dict) and last.get("role") in PROMPT_END_ROLES


def _is_hh_transcript(row: dict) -> bool:
    """HH-RLHF: chosen/rejected transcript strings with Human turns and no separate prompt."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if "prompt" in row or not isinstance(chosen, str) or not isinstance(rejected, str):
        return False
    return chosen.startswith(("\n\nHuman:", "Human:"))
