"""Anthropic HH-RLHF rows: ``chosen`` and ``rejected`` are whole transcripts ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``.

Both transcripts repeat the same dialogue and differ only at the end, so the longest shared prefix of
turns, cut back to end with a Human turn, is the (often multi-turn) prompt, and what follows in each
transcript is the chosen / rejected completion. Treating the whole transcript as one prompt string, as some
loaders do, would hide the earlier assistant turns from the chat template.

Turns are split on a blank line followed by ``Human:`` or ``Assistant:``; a ``Human:`` inside a turn without
the blank line stays part of the text (the harmless-base test split has nine such turns).
"""

from __future__ import annotations

import re

from lit_align.data.errors import FieldError
from lit_align.data.formats._fields import message, preference_record, require, split_shared_prefix

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def convert(row: dict) -> list[dict]:
    """Return one preference record with the shared dialogue as prompt."""
    chosen = parse_transcript(require(row, "chosen", str), "chosen")
    rejected = parse_transcript(require(row, "rejected", str), "rejected")
    prompt, chosen_tail, rejected_tail = split_shared_prefix(chosen, rejected)
    if not prompt:
        raise FieldError("chosen", "chosen and rejected share no opening Human turn")
    return [preference_record(prompt, chosen_tail, rejected_tail, ("chosen", "chosen", "rejected"))]


def parse_transcript(text: str, field: str) -> list[dict]:
    """Split a transcript into user/assistant messages; text before the first marker is an error."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise FieldError(field, "transcript must start with '\\n\\nHuman:'")
    if len(parts) < 3:
        raise FieldError(field, "no 'Human:' / 'Assistant:' turns found")
    return [message(_ROLES[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
