"""Read one data source into internal records: rows → format detection → conversion → provenance.

This is the boundary where a converter's `FieldError` gains its file and line. With ``on_error="raise"``
the first bad row stops the run with a message that points at it; with ``"skip"`` bad rows are counted
under ``error:<field>`` (``error:row`` for lines that are not JSON objects) and reading goes on, so one
broken line in a million does not cost a training run, yet the count shows up in the returned Counter.

Format detection with ``format="auto"`` happens on the first row of every file, so a directory may mix
formats. When the user names the format and a row does not fit it, the error adds what the row looks like.
The OASST flat table is the one format that is not row-local: when a file's first row is a flat message row,
all its rows are gathered and nested with `oasst.build_trees` before conversion; each record's ``row`` is the
root message's row, and an error in a reply points at the reply's own row.

Every record's ``row`` is the 1-based line (or row) of its file, the number errors print. A file without rows
is an error that names it, unless other files of the same directory source have rows (then it is counted as
``empty_file``): "0 examples" much later would not say which file was empty.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import chain, groupby, islice
from operator import itemgetter
from pathlib import Path

from lit_align.data.errors import DataFormatError, FieldError, SkipRecord
from lit_align.data.formats import FORMATS, declared_format_hint, detect_format, oasst, tie_note
from lit_align.data.rows import iter_rows, locate

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
MAX_WARNINGS = 20


def read_source(
    path: str,
    format: str = "auto",
    *,
    name: str | None = None,
    split: str = "train",
    on_error: str = "raise",
    options: dict | None = None,
    max_rows: int | None = None,
    subset: str | None = None,
) -> tuple[list[dict], Counter]:
    """Return the records of `path` (with ``source`` and ``row`` set) and a Counter of what happened.

    The Counter holds ``rows_read``, one key per `SkipRecord` reason, ``error:<field>`` for bad rows
    skipped under ``on_error="skip"`` (``error:row`` for lines that are not JSON objects, ``error:encoding`` for
    lines that are not UTF-8), ``empty_file`` for empty files of a directory, and for OASST ``orphan_message``
    (table rows outside any tree) and the removed messages by reason (``oasst_deleted``, ...).
    ``lang`` is not set here; `clean.clean_record` fills it. ``max_rows`` reads only the first rows (dry runs).
    A path that looks local but does not exist raises FileNotFoundError, an unreachable hub ConnectionError;
    both name the source.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected 'auto' or one of {sorted(FORMATS)}")
    name = name or source_name(path)
    try:
        locate(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"data source '{name}': {err}") from None
    reader = _Reader(name, on_error, options or {})
    on_bad_row = reader.unreadable_row if on_error == "skip" else None
    empty_files: list[str] = []
    rows = iter_rows(path, split, on_bad_row=on_bad_row, subset=subset, on_empty_file=empty_files.append)
    try:
        for file, group in groupby(islice(rows, max_rows), key=itemgetter(0)):
            reader.read_file(file, ((line, row) for _, line, row in group), format)
    except ConnectionError as err:
        raise ConnectionError(f"data source '{name}': {err}") from None  # the message already holds the cause
    _check_not_empty(name, path, reader.counts, empty_files)
    if reader.warned > MAX_WARNINGS:
        log.warning("%s: %d bad rows skipped in total (only the first %d logged)", path, reader.warned, MAX_WARNINGS)
    return reader.records, reader.counts


def _check_not_empty(name: str, path: str, counts: Counter, empty_files: list[str]) -> None:
    """A source without rows stops the run, naming the empty file; an empty file among others is counted."""
    if not counts["rows_read"]:
        if empty_files:
            raise DataFormatError(
                empty_files[0], None, None, f"data source '{name}': the file has no rows (it is empty)"
            )
        raise DataFormatError(path, None, None, f"data source '{name}': no rows")
    if empty_files:
        counts["empty_file"] += len(empty_files)
        log.warning("data source '%s': skipped %d empty file(s): %s", name, len(empty_files), ", ".join(empty_files))


def source_name(path: str) -> str:
    """Default source name: a local file's stem without compression suffix, a directory's name, a hub id."""
    local = Path(path).expanduser()
    if local.is_file():
        return local.name.removesuffix(".gz").rsplit(".", 1)[0]
    if local.is_dir():
        return local.resolve().name
    return str(path)


class _Reader:
    """Accumulates records and counts for one `read_source` call."""

    def __init__(self, name: str, on_error: str, options: dict) -> None:
        self.name = name
        self.on_error = on_error
        self.options = options
        self.records: list[dict] = []
        self.counts: Counter = Counter()
        self.warned = 0

    def read_file(self, file: str, rows: Iterator[tuple[int, dict]], format: str) -> None:
        first = next(rows, None)
        if first is None:
            return
        line, row = first
        declared = format != "auto"
        if not declared:
            try:
                format = detect_format(row)
            except FieldError as err:
                raise DataFormatError(file, line, err.field, err.reason) from err
            log.info("%s: detected format %r", file, format)
            if note := tie_note(row, format):
                log.warning("%s: %s", file, note)
        if format == "oasst" and oasst.is_flat_row(row):
            self._read_oasst_table(file, chain([first], rows))
            return
        convert = FORMATS[format]
        for line, row in chain([first], rows):
            self.counts["rows_read"] += 1
            if format == "oasst":
                self._convert_oasst(file, line, row)
            else:
                self._convert(file, line, row, convert, format if declared else None)

    def _convert(
        self, file: str, line: int, row: dict, convert: Callable[..., list[dict]], declared: str | None
    ) -> None:
        """Convert one row; for a `declared` format that does not read it, the error says what it looks like."""
        try:
            records = convert(row, **self.options)
        except SkipRecord as skip:
            self.counts[skip.reason] += 1
            return
        except FieldError as err:
            hint = declared_format_hint(row, declared) if declared else ""
            self.fail(DataFormatError(file, line, err.field, err.reason + hint))
            return
        self._add(records, line)

    def _add(self, records: list[dict], line: int) -> None:
        self.records.extend({**record, "source": self.name, "row": line} for record in records)

    def _convert_oasst(self, file: str, line: int, tree: dict, line_of: dict[str, int] | None = None) -> None:
        """One OASST tree: its good parts become records; each broken reply is an error at its own row (in a
        flat table, `line_of` maps message ids to rows), and removed replies are counted by reason."""
        try:
            records, errors, removed = oasst.convert_tree(tree, **self.options)
        except SkipRecord as skip:
            self.counts[skip.reason] += 1
            return
        except FieldError as err:
            self.fail(DataFormatError(file, line, err.field, err.reason))
            return
        for err in errors:
            if line_of is not None and err.message_id in line_of:
                # A flat row is its own node: name the node's own field ("role"), not its path from the root.
                self.fail(DataFormatError(file, line_of[err.message_id], err.field.rsplit(".", 1)[-1], err.reason))
            else:
                self.fail(DataFormatError(file, line, err.field, err.reason))
        self.counts.update(removed)
        self._add(records, line)

    def _read_oasst_table(self, file: str, rows: Iterator[tuple[int, dict]]) -> None:
        line_of: dict[str, int] = {}
        table = []
        for line, row in rows:
            self.counts["rows_read"] += 1
            if not isinstance(row.get("message_id"), str) or row["message_id"] in line_of:
                reason = "missing or not a string" if not isinstance(row.get("message_id"), str) else "duplicate"
                self.fail(DataFormatError(file, line, "message_id", reason))
                continue
            line_of[row["message_id"]] = line
            table.append(row)
        trees = oasst.build_trees(table)
        for tree in trees:
            self._convert_oasst(file, line_of[tree["message_id"]], tree, line_of)
        orphans = len(table) - oasst.count_nodes(trees)
        if orphans:
            self.counts["orphan_message"] += orphans

    def unreadable_row(self, error: DataFormatError) -> None:
        """Callback for rows `iter_rows` could not parse; they count as read, then as errors."""
        self.counts["rows_read"] += 1
        self.fail(error)

    def fail(self, error: DataFormatError) -> None:
        """Raise `error`, or (``on_error="skip"``) count it under ``error:<field>`` and log the first few."""
        if self.on_error == "raise":
            raise error
        self.counts[f"error:{error.kind}"] += 1
        self.warned += 1
        if self.warned <= MAX_WARNINGS:
            log.warning("%s (row skipped)", error)
