"""ShareGPT rows (LLaMA-Factory's ``sharegpt`` layout): ``conversations`` of ``{"from", "value"}`` turns.

Two shapes share the keys:

* SFT: the conversation, optionally preceded by a ``system`` string field, ends with a ``gpt`` turn.
* Preference (LLaMA-Factory ``ranking: true``): ``chosen`` and ``rejected`` are single ``{"from", "value"}``
  turns (a list of turns is accepted too) and the conversation is the prompt.

Tool use maps onto the internal roles: a ``function_call`` turn is what the assistant said (the call as JSON
text), an ``observation`` is the tool's answer. The ``tools`` schema field is allowed and ignored: chat
templates that render tool schemas need it from the raw data, and keeping it would widen the record schema.
"""

from __future__ import annotations

from lit_align.data.errors import FieldError
from lit_align.data.formats._fields import (
    message,
    optional,
    parse_messages,
    preference_record,
    sft_record,
)

ROLE_MAP = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}


def convert(row: dict) -> list[dict]:
    """Return one SFT record, or one preference record when the row has ``chosen``/``rejected``."""
    if row.get("conversations") is None:
        raise FieldError("conversations", "missing")
    messages = _turns(row["conversations"], "conversations")
    system = optional(row, "system", str, "")
    if system.strip():
        messages = [message("system", system), *messages]
    if "chosen" in row or "rejected" in row:
        chosen = _completion(row, "chosen")
        rejected = _completion(row, "rejected")
        return [preference_record(messages, chosen, rejected, ("conversations", "chosen", "rejected"))]
    return [sft_record(messages, "conversations")]


def _turns(value: object, field: str, allow_single: bool = False) -> list[dict]:
    return parse_messages(
        value, field, role_key="from", content_key="value", role_map=ROLE_MAP, allow_single=allow_single
    )


def _completion(row: dict, key: str) -> list[dict]:
    if row.get(key) is None:
        raise FieldError(key, "missing")
    return _turns(row[key], key, allow_single=True)
