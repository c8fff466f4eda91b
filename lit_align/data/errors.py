"""Errors raised while reading and converting dataset rows.

Converters look at one row and know nothing about files, so they raise `FieldError` (which field, what is
wrong). The reader knows the file and line and wraps it into `DataFormatError`, whose message is the single
line a user needs to open the file at the right place: ``data/x.jsonl:17: field 'chosen': expected ...``.

`SkipRecord` is not an error: the row is well formed but deliberately not used (a score tie, a filtered
language). The reader counts skips by reason, so every row that produces no record is accounted for.

All three pass every constructor argument to ``Exception.__init__`` so they survive pickling, which
`datasets` multiprocessing and DDP workers rely on.
"""

from __future__ import annotations


class FieldError(ValueError):
    """A row field is missing or has the wrong shape; raised by converters that do not know file or line."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return self.reason if self.field is None else f"field '{self.field}': {self.reason}"


class DataFormatError(ValueError):
    """A row of a data file cannot be used; names the file, the line and (when known) the field.

    ``kind`` is the key a skipped row is counted under (``error:<kind>``) when no field is at fault, e.g.
    ``encoding`` for bytes that are not UTF-8; by default the field, or ``row``.
    """

    def __init__(self, path: str, line: int | None, field: str | None, reason: str, kind: str | None = None) -> None:
        super().__init__(path, line, field, reason, kind)
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason
        self.kind = kind or field or "row"

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        what = self.reason if self.field is None else f"field '{self.field}': {self.reason}"
        return f"{where}: {what}"


class SkipRecord(Exception):
    """A well-formed row that is deliberately dropped; `reason` is the key under which the reader counts it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
