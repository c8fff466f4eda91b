"""Turn a data path into a stream of ``(file, line, row)`` triples, whatever the container format.

Converters only ever see one dict at a time; this module is the one place that knows about JSON Lines,
JSON arrays, Parquet, CSV, directories and the Hugging Face hub. Each row comes with the file it came from
and a 1-based position so errors can say ``file:line``:

* JSON Lines (``.jsonl``, and ``.json`` files that are not one array): the physical line number. Blank lines
  are skipped but still counted, so the number always matches an editor.
* JSON arrays, Parquet, CSV and hub datasets: the element / row index + 1 (for CSV the header is not
  counted, and a quoted field may span several physical lines).

A directory yields every supported file directly inside it (not in sub-directories) in sorted name order;
line numbers restart in each file. Anything that is not an existing local path is treated as a hub dataset
name and read with ``datasets.load_dataset(path, split=split)``.

Gzipped JSON (``.jsonl.gz``, ``.json.gz``) is read transparently because HH-RLHF ships that way.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from lit_align.data.errors import DataFormatError

SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".csv")

Row = tuple[str, int, dict]
BadRowHandler = Callable[[DataFormatError], None]


def iter_rows(
    path: str, split: str = "train", *, on_bad_row: BadRowHandler | None = None, subset: str | None = None
) -> Iterator[Row]:
    """Yield ``(file, line, row)`` for every row under `path`.

    A line that is not valid JSON or not a JSON object raises `DataFormatError`; when `on_bad_row` is given
    the error is passed to it instead and reading continues (a generator cannot resume after raising, so the
    choice has to be made here rather than by the caller).
    """
    local = Path(path)
    if local.is_dir():
        files = sorted(p for p in local.iterdir() if p.is_file() and _suffix(p) in SUFFIXES)
        if not files:
            raise DataFormatError(str(path), None, None, f"no data files ({', '.join(SUFFIXES)}) in directory")
        for file in files:
            yield from _iter_file(file, on_bad_row)
    elif local.is_file():
        if _suffix(local) not in SUFFIXES:
            raise DataFormatError(str(path), None, None, f"unsupported file type; expected one of {SUFFIXES}")
        yield from _iter_file(local, on_bad_row)
    elif _suffix(local) in SUFFIXES or local.is_absolute() or str(path).startswith("."):
        raise FileNotFoundError(f"no such data file or directory: {path}")
    else:
        yield from _iter_hub(str(path), split, on_bad_row, subset)


def _suffix(path: Path) -> str:
    """Return the suffix that decides the reader, keeping `.gz` together with the inner suffix."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:]).lower()
    return path.suffix.lower()


def _iter_file(file: Path, on_bad_row: BadRowHandler | None) -> Iterator[Row]:
    suffix = _suffix(file)
    if suffix == ".parquet":
        rows = _parquet_rows(file)
    elif suffix == ".csv":
        rows = _csv_rows(file)
    else:
        rows = _json_rows(file)
    for line, row in rows:
        if isinstance(row, DataFormatError):
            _bad(row, on_bad_row)
        elif not isinstance(row, dict):
            _bad(DataFormatError(str(file), line, None, f"expected a JSON object, got {_kind(row)}"), on_bad_row)
        else:
            yield str(file), line, row


def _bad(error: DataFormatError, on_bad_row: BadRowHandler | None) -> None:
    if on_bad_row is None:
        raise error
    on_bad_row(error)


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _open_text(file: Path) -> IO[str]:
    if file.suffix.lower() == ".gz":
        return gzip.open(file, "rt", encoding="utf-8-sig")
    return open(file, encoding="utf-8-sig")


def _json_rows(file: Path) -> Iterator[tuple[int, object]]:
    """Read a JSON array (LLaMA-Factory style) or stream JSON Lines, deciding by the first non-blank character."""
    with _open_text(file) as handle:
        if _first_char(handle) == "[":
            try:
                items = json.load(handle)
            except json.JSONDecodeError as err:
                yield err.lineno, DataFormatError(str(file), err.lineno, None, f"invalid JSON array: {err.msg}")
                return
            yield from enumerate(items, start=1)
            return
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                reason = f"invalid JSON: {err.msg} (column {err.colno})"
                yield number, DataFormatError(str(file), number, None, reason)


def _first_char(handle: IO[str]) -> str:
    """Peek at the first non-whitespace character, then rewind."""
    while True:
        chunk = handle.read(4096)
        if not chunk or chunk.strip():
            handle.seek(0)
            return chunk.strip()[:1]


def _parquet_rows(file: Path) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(file).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _csv_rows(file: Path) -> Iterator[tuple[int, object]]:
    with open(file, encoding="utf-8-sig", newline="") as handle:
        yield from enumerate(csv.DictReader(handle), start=1)


def _iter_hub(name: str, split: str, on_bad_row: BadRowHandler | None, subset: str | None = None) -> Iterator[Row]:
    """Stream a hub dataset (``subset`` is its configuration name); rows are numbered by index + 1 and the
    'file' is the dataset name."""
    from datasets import load_dataset

    dataset = load_dataset(name, subset, split=split)
    for number, row in enumerate(dataset, start=1):
        if not isinstance(row, dict):
            _bad(DataFormatError(name, number, None, f"expected a mapping row, got {_kind(row)}"), on_bad_row)
            continue
        yield name, number, row
