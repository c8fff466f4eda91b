"""OpenAI-style chat rows: ``{"messages": [{"role", "content"}, ...]}`` for SFT.

The internal schema already is this format, so conversion is validation plus dropping extra keys
(``name``, ``weight``, ...). Some exports call the list ``conversations`` while keeping role/content;
ShareGPT's from/value lists go to `sharegpt` instead (`detect_format` tells them apart by the keys).
"""

from __future__ import annotations

from lit_align.data.errors import FieldError
from lit_align.data.formats._fields import parse_messages, sft_record


def convert(row: dict) -> list[dict]:
    """Return the row's conversation as one SFT record."""
    key = "messages" if "messages" in row else "conversations"
    if row.get(key) is None:
        raise FieldError("messages", "missing")
    return [sft_record(parse_messages(row[key], key), key)]
