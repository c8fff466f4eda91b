"""COIG and COIG-PC Chinese instruction rows: ``instruction``, ``input``, ``output`` (SFT).

COIG-PC adds bookkeeping fields: ``split`` (its own train/test marker), ``task_type`` (a string or a nested
``{"major": [...], "minor": [...]}`` dict), ``domain``, ``task_name_in_eng`` and ``other``. They are
validated only for shape and otherwise ignored; `keep_split` lets a caller use COIG-PC's own split marker
(rows of another split are skipped with reason ``coig_split_excluded``).
The prompt is built exactly like Alpaca's, so both sources render identically under a chat template.
"""

from __future__ import annotations

from lit_align.data.errors import SkipRecord
from lit_align.data.formats._fields import message, optional, require, sft_record
from lit_align.data.formats.alpaca import prompt_messages


def convert(row: dict, *, keep_split: str | None = None) -> list[dict]:
    """Return one SFT record."""
    optional(row, "task_type", (str, dict, list))
    split = optional(row, "split", str)
    if keep_split is not None and split is not None and split != keep_split:
        raise SkipRecord("coig_split_excluded")
    output = require(row, "output", str)
    return [sft_record([*prompt_messages(row), message("assistant", output)], "output")]
