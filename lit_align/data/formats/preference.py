"""TRL preference rows: ``prompt``, ``chosen``, ``rejected``, each a string or a list of messages.

Covers TRL's four layouts: standard (three strings), conversational (three message lists), mixed (a
string prompt with message-list completions) and implicit prompt (no ``prompt``; ``chosen`` and
``rejected`` are full conversations). When a completion repeats the prompt at its start, as H4 and many
exports do, the shared prefix is removed so the record holds each turn once; with an implicit prompt the
longest shared prefix ending in a user turn becomes the prompt.
"""

from __future__ import annotations

from lit_align.data.errors import FieldError
from lit_align.data.formats._fields import (
    as_messages,
    preference_record,
    split_shared_prefix,
    strip_prompt,
)

FIELDS = ("prompt", "chosen", "rejected")


def convert(row: dict) -> list[dict]:
    """Return one preference record."""
    for key in ("chosen", "rejected"):
        if row.get(key) is None:
            raise FieldError(key, "missing")
    chosen = as_messages(row["chosen"], "chosen", "assistant")
    rejected = as_messages(row["rejected"], "rejected", "assistant")
    if row.get("prompt") is None:
        if not isinstance(row["chosen"], list):
            raise FieldError("prompt", "missing (needed when chosen/rejected are strings)")
        return [preference_record(*split_shared_prefix(chosen, rejected), FIELDS)]
    prompt = as_messages(row["prompt"], "prompt", "user")
    return [preference_record(prompt, strip_prompt(prompt, chosen), strip_prompt(prompt, rejected), FIELDS)]
