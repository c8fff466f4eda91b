"""The prepared-data cache: a split's tokenised examples kept on disk in Arrow, so the next run starts in seconds.

Preparing 160k HH-RLHF pairs (read, clean, de-duplicate, tokenise) takes minutes, and a sweep repeats it for every
run. `load_or_prepare` stores what `prepare_sources` returned under ``<cache dir>/<key>/``: the examples and the
cleaned records as Arrow stream files (``examples.arrow``, ``records.arrow``, read back memory-mapped by
``datasets.Dataset.from_file``, see `lit_align.data.table`), and the per-source reports, from which the data card
and the set-up log are made, in ``meta.json``.

A stale hit would train on data the recipe no longer describes, so the key (`cache_key`) is the SHA-256 of
everything that changes the result:

- every source's content: a local file's SHA-256 (so a one-byte change is a miss, and a touched but unchanged file
  is a hit), every file of a directory, a hub dataset's ``datasets`` fingerprint (its name, subset and split with
  the cached revision's files); and its path, name, format, split, subset, options and ``min_zh_ratio``. Not the
  sampling ``weight``, which only the sampler reads;
- every `PrepareSettings` field (all of them: a new field is in the key without anyone remembering to add it);
- the tokenizer: its files (``tokenizer.json``, vocabulary, merges, ``tokenizer_config.json``, the chat template
  file), and as loaded its chat template, special tokens, class and the ``transformers`` version;
- the data code itself (`data_code_digest`: every ``lit_align/data`` source file), so a lit_align upgrade or a local
  edit that changes what preparation makes can never meet a stale copy; and `DATA_CACHE_VERSION`, the layout of a
  cache folder;
- for a validation split, the training split's key (``in_train`` counts and drops depend on the training records).

Each ``meta.json`` also records the recipe behind the split (`recipe_fields`: the sources, the settings and the
tokenizer's fingerprint), so that a folder written by ``scripts/prepare_data.py --output`` can be checked against a
recipe on a machine without the sources (``data.prepared``, see `lit_align.data.prepared_dir`). A cache entry keeps
the weights of the run that wrote it: they are not in the key.

A hub dataset that cannot be opened, or examples that Arrow cannot hold exactly (`NotStorable`), are prepared as
before and not cached. A folder is complete only when renamed into place with its ``meta.json`` (written last), and
is checked on load (version, key, file sizes, row counts); anything else is ignored with a warning and rebuilt. A file
lock per key makes concurrent runs (or the ranks of one node) wait for the one that prepares, then read its copy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from lit_align.data.clean import record_hash
from lit_align.data.digest import examples_digest
from lit_align.data.prepare import DataSource, PreparedData, PrepareSettings, SourceReport
from lit_align.data.table import ExampleTable, NotStorable, encode_examples
from lit_align.tokenizer import resolve_path

log = logging.getLogger(__name__)

DATA_CACHE_VERSION = 2
"""Bump when the layout of a cache folder changes (what preparation makes is covered by `data_code_digest`)."""

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)
_DIGEST_COLUMN = "__record_digest__"


def default_cache_dir() -> Path:
    """``$LIT_ALIGN_CACHE/data`` if set, else ``$XDG_CACHE_HOME/lit_align/data`` (``~/.cache/lit_align/data``)."""
    if os.environ.get("LIT_ALIGN_CACHE"):
        return Path(os.environ["LIT_ALIGN_CACHE"]).expanduser() / "data"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lit_align" / "data"


def _file_digest(path: Path) -> list:
    with open(path, "rb") as file:
        return [path.stat().st_size, hashlib.file_digest(file, "sha256").hexdigest()]


def source_fingerprint(source: DataSource) -> dict[str, Any] | None:
    """What a source's rows are: file hashes, or a hub dataset's fingerprint; None when it cannot be known."""
    local = Path(source.path).expanduser()
    if local.is_file():
        return {"file": _file_digest(local)}
    if local.is_dir():
        return {"directory": [[p.name, *_file_digest(p)] for p in sorted(local.iterdir()) if p.is_file()]}
    try:
        from datasets import load_dataset

        dataset = load_dataset(source.path, source.subset, split=source.split)
    except Exception as error:  # reading will fail with its own message, or the hub is not there: no cache
        log.info("data source %s: no fingerprint (%s), not cached", source.path, error)
        return None
    return {"hub": source.path, "fingerprint": dataset._fingerprint}


def tokenizer_fingerprint(tokenizer) -> dict[str, Any]:
    """The tokenizer's files (or, for a hub name, its serialised vocabulary) and what loading made of them."""
    from transformers import __version__ as transformers_version

    path = resolve_path(tokenizer.name_or_path)
    files = {}
    if os.path.isdir(path):
        files = {name: _file_digest(Path(path) / name) for name in TOKENIZER_FILES if (Path(path) / name).is_file()}
    elif getattr(tokenizer, "backend_tokenizer", None) is not None:
        files = {"tokenizer.json": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()}
    return {
        "class": type(tokenizer).__name__,
        "files": files,
        "chat_template": tokenizer.chat_template,
        "special_tokens": {key: str(value) for key, value in tokenizer.special_tokens_map.items()},
        "size": len(tokenizer),
        "transformers": transformers_version,
    }


def cache_key(
    sources: Sequence[DataSource], settings: PrepareSettings, tokenizer, *, depends_on: str | None = None
) -> str | None:
    """The SHA-256 naming a split's cache folder (see the module docstring), or None when a source's content cannot
    be known (then the split is not cached). ``depends_on``: the training split's key, for a validation split."""
    described = []
    for source in sources:
        content = source_fingerprint(source)
        if content is None:
            return None
        fields = dataclasses.asdict(source)
        fields.pop("weight")
        described.append({**fields, "content": content})
    payload = {
        "version": DATA_CACHE_VERSION,
        "code": data_code_digest(),
        "sources": described,
        "settings": dataclasses.asdict(settings),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "depends_on": depends_on,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def data_code_digest() -> str:
    """SHA-256 over the source of every module of ``lit_align.data`` (its formats included): `code_digest` of
    this package, once per process.

    Why: a version number bumped by hand is one forgotten bump away from a stale hit after a change to cleaning or
    tokenising. Hashing the code errs the other way: an edit that changes nothing (a comment) prepares again once."""
    return code_digest(Path(__file__).resolve().parent)


def code_digest(package: Path) -> str:
    """SHA-256 over every ``.py`` file under ``package``, each with its relative path."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(f"{path.relative_to(package).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def folder_size(folder: Path) -> int:
    """Bytes in the files under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def recipe_fields(sources: Sequence[DataSource], settings: PrepareSettings, tokenizer) -> dict[str, Any]:
    """What ``meta.json`` says about the recipe behind a split: every source as written (weight included), every
    `PrepareSettings` field and the tokenizer's fingerprint, in JSON's types (tuples become lists)."""
    fields = {
        "sources": [dataclasses.asdict(source) for source in sources],
        "settings": dataclasses.asdict(settings),
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    return json.loads(json.dumps(fields, default=str))


def load_or_prepare(
    directory: Path, key: str, prepare: Callable[[], PreparedData], recipe: dict[str, Any] | None = None
) -> tuple[PreparedData, bool]:
    """The prepared split from ``directory / key``, or ``prepare()`` stored there first (with ``recipe``, see
    `recipe_fields`, in its ``meta.json``); and whether it was a hit.

    Either way the examples come back as a memory-mapped `ExampleTable`, so a first and a second run train on the
    same representation; only data that cannot be stored (`NotStorable`) comes back as ``prepare()`` made it."""
    from filelock import FileLock  # a dependency of huggingface_hub, so always there with transformers

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("data cache: cannot use %s (%s); preparing without it", directory, error)
        return prepare(), False
    folder = directory / key
    with FileLock(str(directory / f".{key}.lock")):
        if folder.exists():
            try:
                return load_prepared(folder, key), True
            except Exception as error:
                log.warning("data cache %s is incomplete or corrupt (%s): ignored and rebuilt", folder, error)
                shutil.rmtree(folder, ignore_errors=True)
        prepared = prepare()
        start = time.perf_counter()
        try:
            save_prepared(folder, key, prepared, recipe)
        except (NotStorable, OSError) as error:
            log.warning("data cache: not cached (%s); the examples stay in memory", error)
            return prepared, False
        seconds = time.perf_counter() - start
        log.info("data cache: wrote %d examples to %s in %.1fs", len(prepared.examples), folder, seconds)
        return load_prepared(folder, key), False


def save_prepared(folder: Path, key: str | None, prepared: PreparedData, recipe: dict[str, Any] | None = None) -> None:
    """Write ``prepared`` to ``folder`` atomically: everything in a temporary folder beside it, ``meta.json`` last,
    then one rename. A folder that another process renamed into place first is kept, and ours removed.

    ``recipe`` (`recipe_fields`) goes into ``meta.json`` as it is. Examples and records that come from such a folder
    (whole `ExampleTable` s) are written from their Arrow table, not decoded and encoded again."""
    examples, example_kinds = _arrow_table(prepared.examples)
    records, record_kinds = _arrow_table(prepared.records)
    if _DIGEST_COLUMN not in records.column_names:
        known = prepared.record_digests
        digests = known if known is not None else [record_hash(record) for record in prepared.records]
        records = records.append_column(_DIGEST_COLUMN, pa.array(list(digests), type=pa.string()))
    temporary = folder.parent / f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        temporary.mkdir()
        _write_arrow(examples, temporary / "examples.arrow")
        _write_arrow(records, temporary / "records.arrow")
        meta = {
            "version": DATA_CACHE_VERSION,
            "key": key,
            "count": len(prepared.examples),
            "example_columns": example_kinds,
            "record_columns": record_kinds,
            "examples_sha256": examples_digest(prepared.examples),  # a stored digest when copying a cached split
            "reports": [_report_json(report) for report in prepared.reports],
            "files": {str(p.relative_to(temporary)): p.stat().st_size for p in sorted(temporary.rglob("*.arrow"))},
            **(recipe or {}),
        }
        (temporary / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.rename(temporary, folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def load_prepared(folder: Path, key: str | None) -> PreparedData:
    """The split stored in ``folder``, memory-mapped; raises ``ValueError`` (or the reader's error) for a folder
    that is not a complete copy for ``key`` of this version of the data code. ``key`` None takes a folder of any
    key: a prepared-data folder from elsewhere, whose recipe `lit_align.data.prepared_dir` checks instead."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if meta.get("version") != DATA_CACHE_VERSION or (key is not None and meta.get("key") != key):
        raise ValueError(f"written for version {meta.get('version')}, key {meta.get('key')}")
    for name, size in meta["files"].items():
        if (folder / name).stat().st_size != size:
            raise ValueError(f"{name} has {(folder / name).stat().st_size} bytes, {size} were written")
    from datasets import Dataset

    examples = Dataset.from_file(str(folder / "examples.arrow"))
    records = Dataset.from_file(str(folder / "records.arrow"))
    if not len(examples) == len(records) == meta["count"]:
        raise ValueError(f"{len(examples)} examples and {len(records)} records, {meta['count']} were written")
    return PreparedData(
        examples=ExampleTable(examples, meta["example_columns"], digest=meta["examples_sha256"]),
        records=ExampleTable(records, meta["record_columns"]),
        reports=[_report_from_json(report) for report in meta["reports"]],
        record_digests=records.data.column(_DIGEST_COLUMN).to_pylist(),
    )


def _arrow_table(rows: Sequence[dict]) -> tuple[pa.Table, list]:
    """``rows`` as an Arrow table and its ``(column, kind)`` list: a whole stored `ExampleTable` as stored (its
    columns beyond ``kinds``, such as the record digests, included), anything else through `encode_examples`."""
    if isinstance(rows, ExampleTable) and rows.rows == range(len(rows.dataset)) and rows.dataset._indices is None:
        return rows.dataset.data.table, [list(pair) for pair in rows.kinds]
    return encode_examples(rows)


def _write_arrow(table: pa.Table, path: Path) -> None:
    """``table`` as one Arrow stream file, the format ``datasets.Dataset.from_file`` memory-maps. Written batch by
    batch from the table's own buffers: ``Dataset.save_to_disk`` would first copy the whole table in memory."""
    table = table.replace_schema_metadata(None)  # what datasets adds on reading: a copy's bytes equal the original's
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=10_000)


def _report_json(report: SourceReport) -> dict:
    """Counters as ``[key, value]`` pairs: JSON would turn the buckets' integer keys into strings, and the pairs
    keep the order, which the logged metrics follow."""
    fields = dataclasses.asdict(report)
    return {**fields, **{name: list(getattr(report, name).items()) for name in ("counts", "languages", "buckets")}}


def _report_from_json(fields: dict) -> SourceReport:
    counters = {name: Counter(dict((key, value) for key, value in fields[name])) for name in ("counts", "languages")}
    buckets = Counter({int(key): value for key, value in fields["buckets"]})
    rest = {k: v for k, v in fields.items() if k not in ("counts", "languages", "buckets")}
    return SourceReport(**rest, **counters, buckets=buckets)
