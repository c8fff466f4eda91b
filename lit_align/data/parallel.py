"""The per-record part of preparation, run in ``data.num_proc`` worker processes.

Cleaning and tokenising are about 98% of preparation (measured on HH-RLHF pairs with the tiny tokenizer: reading
2%, cleaning 26%, tokenising 71%) and each record's outcome depends on that record alone, so they spread over
processes. What depends on order stays in the calling process, which walks the outcomes in record order exactly as
the one-process pipeline walks the records (`lit_align.data.prepare.prepare_sources`):

- de-duplication (the first copy of a record wins, across sources);
- the counts, in the order their keys first appear (the data card and the logged metrics follow it);
- errors: a worker catches what a record raises and sends it back with the outcome, and the caller raises it only
  when the one-process pipeline would have reached that record. A duplicate's broken chat template is never
  raised, and the first error is the same one, with the same file, line and field, whatever ``num_proc`` is.

A worker therefore also tokenises records that the caller then drops (duplicates, validation records dropped as
``in_train``): a little wasted work for results that cannot depend on the number of processes.

Workers are forked on Linux, so they share the tokenizer without pickling it; elsewhere they are spawned and get
it pickled once each. Reading (parsing and converting rows) stays in the calling process: its errors name file and
line as they always did, and OASST trees need a whole file.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from lit_align.data.clean import clean_record, content_digest
from lit_align.data.examples import as_prompt_record, tokenize_record
from lit_align.data.table import EncodedRows, encode_rows

MAX_DEFAULT_PROCESSES = 8
"""``data.num_proc`` by default: the cores this process may use, at most this many (tokenising does not gain much
from more, and each worker holds its share of the examples until the caller takes them)."""
MIN_RECORDS_PER_PROCESS = 500
"""Fewer records than this per process are prepared in the calling process: starting workers would cost more."""


class Outcome(NamedTuple):
    """What one record became (see the module docstring for who uses which field). Its example and cleaned record
    travel in the chunk's Arrow tables (`Chunk`), not here."""

    row: int | None
    """The record's line in its file."""
    conversion_error: Exception | None
    """Task prompt: why the record has no prompt to take (a `FieldError` the caller places in its file and line)."""
    drop: str | None
    """Why cleaning drops it (before de-duplication), or None."""
    digest: str | None
    """`record_hash`, for de-duplication and the validation split's ``in_train`` check."""
    lang: str | None
    """``en`` or ``zh``."""
    length: int | None
    """The example's length in tokens; None when tokenising made no example (counted in ``counts``)."""
    counts: dict | None
    """What tokenising this record added to the source's counts."""
    truncated_lengths: list[int] | None
    """The untruncated length of a record cut at ``max_length``."""
    error: Exception | None
    """What tokenising raised."""


class Chunk(NamedTuple):
    """The outcomes of consecutive records, and the examples and cleaned records of those that made an example, in
    order, encoded by `encode_rows` (Arrow pickles as flat buffers: far cheaper to send back than lists of ints)."""

    outcomes: list[Outcome]
    examples: EncodedRows
    records: EncodedRows


def default_num_proc() -> int:
    """The cores available to this process (its CPU affinity where the system has one), at most
    `MAX_DEFAULT_PROCESSES`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_PROCESSES))


def prepared_chunks(
    records: Sequence[dict],
    tokenizer,
    settings,
    *,
    source: str,
    min_zh_ratio: float | None,
    num_proc: int,
) -> Iterator[Chunk]:
    """Every record's `Outcome`, a chunk at a time and in order, from ``num_proc`` processes (1: this one)."""
    job = (source, min_zh_ratio)
    processes = min(num_proc, len(records) // MIN_RECORDS_PER_PROCESS)
    # Several chunks per process keep every worker busy to the end; chunks of a few hundred keep each message small.
    size = max(64, min(1000, -(-len(records) // (max(processes, 1) * 8))))
    chunks = ((records[start : start + size], job) for start in range(0, len(records), size))
    if processes <= 1:
        for chunk in chunks:
            yield _chunk(*chunk, tokenizer, settings)
        return
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(processes, initializer=_start_worker, initargs=(tokenizer, settings)) as pool:
        yield from pool.imap(_worker_chunk, chunks)


_worker_state: dict = {}


def _start_worker(tokenizer, settings) -> None:
    _worker_state.update(tokenizer=tokenizer, settings=settings)


def _worker_chunk(chunk: tuple[Sequence[dict], tuple]) -> Chunk:
    return _chunk(*chunk, _worker_state["tokenizer"], _worker_state["settings"])


def _chunk(records: Sequence[dict], job: tuple, tokenizer, settings) -> Chunk:
    source, min_zh_ratio = job
    outcomes, examples, cleaned_records = [], [], []
    for record in records:
        row = record.get("row")
        if settings.task == "prompt":
            try:
                record = as_prompt_record(record)
            except Exception as error:  # a FieldError, or a ConfigError for a preference pair
                outcomes.append(Outcome(row, error, None, None, None, None, None, None, None))
                continue
        cleaned, drop = clean_record(record, min_zh_ratio=min_zh_ratio, nfkc=settings.nfkc)
        if drop is not None:
            outcomes.append(Outcome(row, None, drop, None, None, None, None, None, None))
            continue
        counts, truncated, example, error = Counter(), [], None, None
        try:
            example = tokenize_record(cleaned, tokenizer, settings, counts, truncated)
        except Exception as raised:  # raised by the caller when the one-process order reaches this record
            error = raised
        length = None
        if example is not None:
            example.update(lang=cleaned["lang"], source=source, row=cleaned.get("row"))
            examples.append(example)
            cleaned_records.append(cleaned)
            length = example["length"]
        outcome = (content_digest(cleaned), cleaned["lang"], length, dict(counts) or None, truncated or None, error)
        outcomes.append(Outcome(row, None, None, *outcome))
    return Chunk(outcomes, encode_rows(examples), encode_rows(cleaned_records))
