"""Turn a data path into a stream of ``(file, line, row)`` triples, whatever the container format.

Converters only ever see one dict at a time; this module is the one place that knows about JSON Lines,
JSON arrays, Parquet, CSV, directories and the Hugging Face hub. Each row comes with the file it came from
and a 1-based position so errors can say ``file:line``:

* JSON Lines (``.jsonl``, and ``.json`` files that are not one array): the physical line number. Blank lines
  are skipped but still counted, so the number always matches an editor.
* JSON arrays, Parquet, CSV and hub datasets: the element / row index + 1 (for CSV the header is not
  counted, and a quoted field may span several physical lines).

A directory yields every supported file directly inside it (not in sub-directories) in sorted name order;
line numbers restart in each file. A name is read from the hub (``datasets.load_dataset(path, split=split)``)
only when it cannot be a local path (`locate`): a missing ``data/x`` is a missing file, not a dataset id, and
an unreachable hub is said at once instead of after minutes of retries.

Files are decoded line by line, so bytes that are not UTF-8 are an error at their own line (skippable), not a
``UnicodeDecodeError`` from the middle of a buffer. Gzipped JSON (``.jsonl.gz``, ``.json.gz``) is read
transparently because HH-RLHF ships that way. CSV cells that hold message lists as pandas writes them
(``"[{'role': 'user', ...}]"``, a Python repr) or as JSON text are parsed back into lists (`_cell_value`):
used as text, the repr would become the prompt.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from lit_align.data.errors import DataFormatError
from lit_align.paths import hub_offline as _hub_offline
from lit_align.paths import hub_reachable
from lit_align.paths import looks_local as _looks_local

SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".csv")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
LOCAL_COPY_HINT = "point `path:` at a local copy of the data (path: /local/dir/file.jsonl)"

Row = tuple[str, int, dict]
BadRowHandler = Callable[[DataFormatError], None]
EmptyFileHandler = Callable[[str], None]


def iter_rows(
    path: str,
    split: str = "train",
    *,
    on_bad_row: BadRowHandler | None = None,
    subset: str | None = None,
    on_empty_file: EmptyFileHandler | None = None,
) -> Iterator[Row]:
    """Yield ``(file, line, row)`` for every row under `path`.

    A line that is not valid JSON, not a JSON object or not UTF-8 raises `DataFormatError`; when `on_bad_row`
    is given the error is passed to it instead and reading continues (a generator cannot resume after raising,
    so the choice has to be made here rather than by the caller). A file without rows is passed to
    `on_empty_file`, or raises.
    """
    where = locate(path)
    if isinstance(where, str):
        yield from _iter_hub(where, split, on_bad_row, subset)
    elif where.is_dir():
        files = sorted(p for p in where.iterdir() if p.is_file() and _suffix(p) in SUFFIXES)
        if not files:
            raise DataFormatError(str(path), None, None, f"no data files ({', '.join(SUFFIXES)}) in directory")
        for file in files:
            yield from _iter_file(file, on_bad_row, on_empty_file)
    else:
        if _suffix(where) not in SUFFIXES:
            raise DataFormatError(str(path), None, None, f"unsupported file type; expected one of {SUFFIXES}")
        yield from _iter_file(where, on_bad_row, on_empty_file)


def locate(path: str) -> Path | str:
    """An existing local file or directory (``~`` expanded), or the hub dataset name `path` must then be.

    Raises FileNotFoundError when `path` looks local (`looks_local`) but does not exist: sending ``data/nope``
    to the hub would only fail minutes later with a connection error that never mentions the typo.
    """
    local = Path(path).expanduser()
    if local.exists():
        return local
    if looks_local(str(path)):
        relative = "" if local.is_absolute() else f" (relative paths start at {Path.cwd()})"
        raise FileNotFoundError(f"no such file or directory: {path}{relative}")
    return str(path)


def looks_local(path: str) -> bool:
    """`lit_align.paths.looks_local` with the data file suffixes: ``x.jsonl`` is a file, never a hub id."""
    return _looks_local(path, SUFFIXES)


def _suffix(path: Path) -> str:
    """Return the suffix that decides the reader, keeping `.gz` together with the inner suffix."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return "".join(suffixes[-2:]).lower()
    return path.suffix.lower()


def _iter_file(file: Path, on_bad_row: BadRowHandler | None, on_empty_file: EmptyFileHandler | None) -> Iterator[Row]:
    suffix = _suffix(file)
    if suffix == ".parquet":
        rows = _parquet_rows(file)
    elif suffix == ".csv":
        rows = _csv_rows(file)
    else:
        rows = _json_rows(file)
    empty = True
    for line, row in rows:
        empty = False
        if isinstance(row, DataFormatError):
            _bad(row, on_bad_row)
        elif not isinstance(row, dict):
            _bad(DataFormatError(str(file), line, None, f"expected a JSON object, got {_kind(row)}"), on_bad_row)
        else:
            yield str(file), line, row
    if empty:
        if on_empty_file is None:
            raise DataFormatError(str(file), None, None, "the file has no rows (it is empty)")
        on_empty_file(str(file))


def _bad(error: DataFormatError, on_bad_row: BadRowHandler | None) -> None:
    if on_bad_row is None:
        raise error
    on_bad_row(error)


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


# ---- text and encodings ---------------------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_RECODE_HINT = "save the file as UTF-8 (a GBK file: iconv -f GBK -t UTF-8 in.jsonl > out.jsonl)"


def _open_binary(file: Path) -> IO[bytes]:
    return gzip.open(file, "rb") if file.suffix.lower() == ".gz" else open(file, "rb")


def _encoding_error(file: Path, line: int, raw: bytes, err: UnicodeDecodeError) -> DataFormatError:
    """Where in `raw` (one line, or a whole file that starts at `line`) the bytes stop being UTF-8."""
    before = raw[: err.start]
    line += before.count(b"\n")
    column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
    reason = f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {column}); {_RECODE_HINT}"
    return DataFormatError(str(file), line, None, reason, kind="encoding")


def _json_rows(file: Path) -> Iterator[tuple[int, object]]:
    """Read a JSON array (LLaMA-Factory style) or stream JSON Lines, deciding by the first non-blank byte."""
    with _open_binary(file) as handle:
        head = handle.read(4096)
        if head.startswith(_UTF16_BOMS):
            reason = "the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"
            yield 1, DataFormatError(str(file), None, None, reason, kind="encoding")
            return
        handle.seek(0)
        if head.removeprefix(_BOM).lstrip()[:1] == b"[":
            yield from _json_array(file, handle.read().removeprefix(_BOM))
            return
        for number, raw in enumerate(handle, start=1):
            try:
                line = (raw.removeprefix(_BOM) if number == 1 else raw).decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, _encoding_error(file, number, raw, err)
                continue
            if line.strip():
                yield number, _json_line(file, number, line)


def _json_array(file: Path, raw: bytes) -> Iterator[tuple[int, object]]:
    try:
        items = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        yield 1, _encoding_error(file, 1, raw, err)
        return
    except json.JSONDecodeError as err:
        yield err.lineno, DataFormatError(str(file), err.lineno, None, f"invalid JSON array: {err.msg}")
        return
    yield from enumerate(items, start=1)


def _json_line(file: Path, number: int, line: str) -> object:
    """The JSON value on one line, or a `DataFormatError` at the column where the JSON broke.

    The trailing newline is stripped first: left in, a line cut short reports the column after it (column 1
    of the next line) instead of the end of the text."""
    text = line.rstrip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        reason = f"invalid JSON: {err.msg.removesuffix(' at')} at column {err.pos + 1}"
        if err.pos >= len(text) or err.msg.startswith("Unterminated string"):
            reason += f"; the line ends after column {len(text)} before the JSON is complete (cut short?)"
        return DataFormatError(str(file), number, None, reason)


def _parquet_rows(file: Path) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(file).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield number, row


# ---- CSV ------------------------------------------------------------------------------------------------------

# A cell that holds messages (or alpaca history pairs) as pandas or json.dumps writes them. Only these are parsed:
# text that merely starts with a bracket ("[INST] ...", "[Verse 1]") stays text.
_STRUCTURED = re.compile(r"""^\s*(\[\s*\]|\[\s*\{\s*['"](role|content|from|value)['"]\s*:|\[\s*\[\s*['"])""")
_MESSAGE = re.compile(r"""^\s*\{\s*['"](role|content|from|value)['"]\s*:""")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _csv_rows(file: Path) -> Iterator[tuple[int, object]]:
    # Conversations easily pass csv's default 128 KiB field limit; a cell is bounded by memory instead.
    csv.field_size_limit(2**31 - 1)
    # surrogateescape keeps undecodable bytes as markers, so a bad byte costs its row, not the rest of the file.
    with open(file, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            yield number, _csv_row(file, number, row)


def _csv_row(file: Path, number: int, row: dict) -> dict | DataFormatError:
    out = {}
    for key, value in row.items():
        if isinstance(value, str) and (bad := _SURROGATE.search(value)):
            byte = ord(bad.group()) - 0xDC00
            reason = f"not valid UTF-8 (byte 0x{byte:02x} in column '{key}'); {_RECODE_HINT}"
            return DataFormatError(str(file), number, None, reason, kind="encoding")
        try:
            out[key] = _cell_value(value)
        except ValueError as err:
            return DataFormatError(str(file), number, key, str(err))
    return out


def _cell_value(value: object) -> object:
    """A CSV cell as the list or dict it holds when it looks like messages, else unchanged.

    JSON first, then a Python literal (``ast.literal_eval`` evaluates literals only, never code): pandas writes
    a list cell with ``str()``, so its quotes are Python's."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    is_list = _STRUCTURED.match(text) is not None and text.endswith("]")
    if not (is_list or (_MESSAGE.match(text) and text.endswith("}"))):
        return value
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        what = "a list of messages" if is_list else "a message"
        raise ValueError(
            f"looks like {what} but is neither JSON nor a Python literal ({type(err).__name__}: {err}); a NumPy "
            "array's text (pandas writes one for a column read from Parquet) has no commas between items. Write "
            "the table as JSON Lines instead: df.to_json(path, orient='records', lines=True, force_ascii=False)"
        ) from None
    if not isinstance(parsed, (list, dict)):
        raise ValueError(f"looks like a list of messages but holds a {type(parsed).__name__}")
    return parsed


# ---- the hub --------------------------------------------------------------------------------------------------


def hub_offline() -> str | None:
    """The environment variable that puts the hub or `datasets` offline (``HF_DATASETS_OFFLINE=1``...), or None."""
    return _hub_offline(OFFLINE_VARIABLES)


def _iter_hub(name: str, split: str, on_bad_row: BadRowHandler | None, subset: str | None = None) -> Iterator[Row]:
    """Stream a hub dataset (``subset`` is its configuration name); rows are numbered by index + 1 and the
    'file' is the dataset name. Offline, only the local cache can answer; with no connection, it fails at once."""
    offline = hub_offline()
    if offline is None and not hub_reachable():
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        raise ConnectionError(
            f"{name} is not a local file or directory, and the Hugging Face hub ({endpoint}) cannot be reached "
            f"from here: {LOCAL_COPY_HINT}, or, if the dataset is in the local cache, set HF_DATASETS_OFFLINE=1 "
            "to read it from there"
        )
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, subset, split=split)
    except OSError as err:
        if offline is None:
            raise
        raise ConnectionError(
            f"{name} is not a local file or directory and is not in the local cache, and the Hugging Face hub is "
            f"offline ({offline}=1): {LOCAL_COPY_HINT}, or download it first with {offline} unset ({err})"
        ) from err
    for number, row in enumerate(dataset, start=1):
        if not isinstance(row, dict):
            _bad(DataFormatError(name, number, None, f"expected a mapping row, got {_kind(row)}"), on_bad_row)
            continue
        yield name, number, row
