"""Examples held in Arrow (memory-mapped from the data cache) and read back as the dicts the rest of the code knows.

Why: 160k tokenised pairs as Python lists of ints take gigabytes of host memory, in every DDP rank, and a second
run would have to rebuild them. In Arrow they are a few flat buffers that ``datasets.Dataset.from_file`` maps from
disk, so the page cache holds one copy for all the processes of a node.

How the rest of the code reads them (`ExampleTable`):

- ``table[i]`` is one example as a dict equal to the one preparation made (token lists as Python lists), plus
  ``index`` and ``split`` once the data module has numbered the split (`numbered`); collators see no difference.
  ``table[a:b:c]`` is a view that keeps every example's ``index``, as slicing the numbered list did.
- ``__getitems__`` lets a ``DataLoader`` fetch a whole batch in one Arrow read.
- `column` gives one field of every example without building the dicts: the sampler's lengths (numpy), languages
  and sources, and the data card's counts. It works on a plain list of dicts too (generated examples,
  ``data.cache: false``), so callers need not know which they hold.

Columns are typed where Arrow can hold the values exactly: token lists (int32, int64 if an id does not fit),
integers, floats and strings, each possibly None. Anything else (a prompt's messages, a prompt's reward fields, a key
that some examples lack) is stored as JSON text per example, checked to read back equal, and a missing key stays
missing. Values that JSON cannot hold make `encode_examples` raise `NotStorable`: the caller then keeps the examples
in memory instead of caching them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import pyarrow as pa

KINDS = ("ids", "int", "float", "str", "json")


class NotStorable(ValueError):
    """An example value that Arrow and JSON cannot hold exactly."""


def _kind(values: list, present: bool) -> str:
    """The narrowest column kind that holds every value exactly (None allowed except for token lists)."""
    given = [v for v in values if v is not None]
    if not present or not given:
        return "json"
    if all(type(v) is list for v in values) and all(not v or type(v[0]) is int for v in given):
        return "ids"
    for kind, python_type in (("int", int), ("float", float), ("str", str)):
        if all(type(v) is python_type for v in given):
            return kind
    return "json"


def _json(value: Any, key: str) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise NotStorable(f"example field {key!r} cannot be stored: {err}") from None
    if json.loads(text) != value:
        raise NotStorable(f"example field {key!r} does not survive JSON exactly (a tuple or a non-str key?)")
    return text


def _array(values: list, kind: str) -> pa.Array:
    if kind == "ids":
        try:
            return pa.array(values, type=pa.list_(pa.int32()))
        except (pa.ArrowInvalid, OverflowError):
            return pa.array(values, type=pa.list_(pa.int64()))
    return pa.array(values, type={"int": pa.int64(), "float": pa.float64(), "str": pa.string()}[kind])


def encode_examples(examples: Sequence[dict]) -> tuple[pa.Table, list[tuple[str, str]]]:
    """An Arrow table of ``examples`` and its ``(column, kind)`` list, which `ExampleTable` needs to decode it."""
    keys = list(dict.fromkeys(key for example in examples for key in example))
    columns, kinds = {}, []
    for key in keys:
        present = all(key in example for example in examples)
        values = [example.get(key) for example in examples]
        kind = _kind(values, present)
        if kind == "json":
            values = [_json(e[key], key) if key in e else None for e in examples]
            columns[key] = pa.array(values, type=pa.string())
        else:
            try:
                columns[key] = _array(values, kind)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as err:
                raise NotStorable(f"example field {key!r} cannot be stored: {err}") from None
        kinds.append((key, kind))
    return pa.table(columns), kinds


class EncodedRows(NamedTuple):
    """Rows as `encode_examples` made them, or as they were when they cannot be stored (``table`` None)."""

    table: pa.Table | None
    kinds: list[tuple[str, str]] | None
    rows: list[dict] | None


def encode_rows(rows: Sequence[dict]) -> EncodedRows:
    """``rows`` in Arrow, or kept as they are when Arrow and JSON cannot hold them (`NotStorable`)."""
    try:
        return EncodedRows(*encode_examples(rows), None)
    except NotStorable:
        return EncodedRows(None, None, list(rows))


def in_memory(table: pa.Table, kinds: Sequence[Sequence[str]]) -> ExampleTable:
    """An `ExampleTable` over a table held in memory (not yet, or never, written to the data cache). The fingerprint
    is given because ``datasets`` would otherwise hash the whole table for one, a copy of it in memory and seconds."""
    from datasets import Dataset
    from datasets.table import InMemoryTable

    return ExampleTable(Dataset(InMemoryTable(table), fingerprint=uuid.uuid4().hex), kinds)


class RowCollector:
    """A split's rows gathered a chunk at a time, each chunk filtered to the rows kept, and joined by `finish` into
    one `ExampleTable`: preparation never holds the whole split as Python dicts. Chunks whose columns differ (a key
    only some chunks have, say) are decoded and encoded again as one; rows that cannot be stored stay a list."""

    def __init__(self) -> None:
        self.parts: list[EncodedRows] = []

    def add(self, encoded: EncodedRows, keep: Sequence[bool]) -> None:
        if not any(keep):
            return
        if encoded.table is None:
            rows = [row for row, kept in zip(encoded.rows, keep, strict=True) if kept]
            self.parts.append(EncodedRows(None, None, rows))
        else:
            table = encoded.table if all(keep) else encoded.table.filter(pa.array(keep, type=pa.bool_()))
            self.parts.append(EncodedRows(table, encoded.kinds, None))

    def finish(self) -> Sequence[dict]:
        if not self.parts:
            return []
        kinds = {tuple(map(tuple, part.kinds or ())) for part in self.parts}
        if all(part.table is not None for part in self.parts) and len(kinds) == 1:
            tables = [part.table for part in self.parts]
            # Equal schemas join without a copy; "permissive" would cast (copy) every chunk, here to widen int32
            # token ids to int64 where a chunk needed that.
            same = all(table.schema == tables[0].schema for table in tables)
            table = pa.concat_tables(tables, promote_options="none" if same else "permissive")
            return in_memory(table, self.parts[0].kinds)
        rows = [row for part in self.parts for row in (part.rows if part.table is None else in_memory(*part[:2]))]
        self.parts = []
        encoded = encode_rows(rows)
        return rows if encoded.table is None else in_memory(encoded.table, encoded.kinds)


class ExampleTable(Sequence):
    """A read-only sequence of example dicts over an Arrow dataset (see the module docstring).

    Args:
        dataset: A ``datasets.Dataset`` written from `encode_examples`' table.
        kinds: Its ``(column, kind)`` list.
        rows: The dataset rows this view shows, in order (default: all).
        split: Set by `numbered`: every example then carries ``split`` and ``index`` (its row in the split).
        digest: `lit_align.data.digest.examples_digest` of all the dataset's rows, when known (the cache stores it).
    """

    def __init__(
        self,
        dataset,
        kinds: Sequence[Sequence[str]],
        rows: range | None = None,
        split: str | None = None,
        digest: str | None = None,
    ):
        self.dataset = dataset
        self.kinds = [tuple(pair) for pair in kinds]
        self.rows = range(len(dataset)) if rows is None else rows
        self.split = split
        self.digest = digest
        self._columns: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return ExampleTable(self.dataset, self.kinds, self.rows[item], self.split, self.digest)
        row = self.rows[item]
        return self._decode(self.dataset[row], row)

    def __getitems__(self, items: Sequence[int]) -> list[dict]:
        """Many examples in one Arrow read (``DataLoader`` calls this with a batch's indices)."""
        rows = [self.rows[i] for i in items]
        batch = self.dataset[rows]
        return [self._decode({key: values[n] for key, values in batch.items()}, row) for n, row in enumerate(rows)]

    def __iter__(self) -> Iterator[dict]:
        for start in range(0, len(self), 256):
            yield from self.__getitems__(range(start, min(start + 256, len(self))))

    def _decode(self, stored: dict, row: int) -> dict:
        """The example as prepared: its keys in column order, JSON read back, keys it lacked left out; columns
        other than ``kinds`` (bookkeeping that the cache keeps beside the examples) are not part of it."""
        example = {}
        for key, kind in self.kinds:
            if kind != "json":
                example[key] = stored[key]
            elif stored[key] is not None:
                example[key] = json.loads(stored[key])
        if self.split is not None:
            example.update(index=row, split=self.split)
        return example

    def column(self, key: str):
        """``key`` of every example in this view: a numpy array for numbers, a list otherwise; computed once."""
        if key not in self._columns:
            values = self.dataset.data.column(key)
            kind = dict(self.kinds)[key]
            if kind in ("int", "float") and not values.null_count:
                values = values.to_numpy()
            else:
                values = values.to_pylist()
                if kind == "json":
                    values = [None if v is None else json.loads(v) for v in values]
            self._columns[key] = values[self.rows.start : self.rows.stop : self.rows.step]
        return self._columns[key]

    def token_columns(self, suffixes: tuple[str, ...]) -> dict[str, tuple] | None:
        """For `lit_align.data.digest.examples_digest`: every token-list column whose name ends with one of
        ``suffixes``, as ``(values, starts, ends)`` numpy arrays over the Arrow buffers (no copy), for this view's
        rows; None when such a column is not a plain token list (then examples are hashed one by one)."""
        keys = [key for key, _ in self.kinds if key.endswith(suffixes)]
        if any(kind != "ids" for key, kind in self.kinds if key in keys):
            return None
        columns = {}
        for key in keys:
            array = self.dataset.data.column(key).combine_chunks()
            offsets = array.offsets.to_numpy()
            rows = slice(self.rows.start, self.rows.stop, self.rows.step)
            columns[key] = (array.values.to_numpy(), offsets[:-1][rows], offsets[1:][rows])
        return columns

    def with_split(self, split: str) -> ExampleTable:
        return ExampleTable(self.dataset, self.kinds, self.rows, split, self.digest)

    @property
    def known_digest(self) -> str | None:
        """The stored digest, when this view shows every row in order."""
        return self.digest if self.rows == range(len(self.dataset)) else None


def column(examples: Sequence[dict], key: str):
    """``key`` of every example, from an `ExampleTable`'s Arrow column or from a list of dicts."""
    if isinstance(examples, ExampleTable):
        return examples.column(key)
    return [example[key] for example in examples]


def numbered(examples: Sequence[dict], split: str) -> Sequence[dict]:
    """The examples of ``split`` with their identity, ``split`` and ``index`` (position in the split): precomputed
    reference log-probs are looked up by it. A list is numbered in place; a table gets a numbered view."""
    if isinstance(examples, ExampleTable):
        return examples.with_split(split)
    for index, example in enumerate(examples):
        example.update(index=index, split=split)
    return examples
