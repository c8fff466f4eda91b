"""One fingerprint for a split's tokenised examples, shared by everything that must know "the same data".

The reference log-prob cache keys its files on it (`lit_align.modules.reference_cache`) and every run records it
in its ``run.json`` (`lit_align.run_record`). Hashing token ids rather than the source files means the digest
changes exactly when what the model sees changes: a new chat template, ``max_length`` or truncation rule gives a
new digest even when the JSONL files are untouched, and re-saving a file with the same content does not.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

TOKEN_KEYS = ("input_ids", "labels")


def examples_digest(examples: Sequence[dict]) -> str:
    """SHA-256 over every ``*input_ids`` and ``*labels`` list of every example, in order.

    Examples in Arrow (`lit_align.data.table.ExampleTable`) are hashed from their column buffers, to the same
    digest, without building a dict per example: every run records this digest at start."""
    if (known := getattr(examples, "known_digest", None)) is not None:
        return known
    token_columns = getattr(examples, "token_columns", None)
    if token_columns is not None and (columns := token_columns(TOKEN_KEYS)) is not None:
        return columns_digest(columns)
    digest = hashlib.sha256()
    for example in examples:
        for key in sorted(k for k in example if k.endswith(TOKEN_KEYS)):
            ids = array("q", example[key])
            digest.update(f"{key}:{len(ids)};".encode())
            digest.update(ids.tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def columns_digest(columns: dict[str, tuple]) -> str:
    """`examples_digest` of examples given as token columns: key to ``(values, starts, ends)``, numpy arrays with
    example ``i``'s list at ``values[starts[i]:ends[i]]``."""
    digest = hashlib.sha256()
    keys = sorted(columns)
    count = len(columns[keys[0]][1]) if keys else 0
    for i in range(count):
        for key in keys:
            values, starts, ends = columns[key]
            ids = values[starts[i] : ends[i]].astype("<i8", copy=False)
            digest.update(f"{key}:{len(ids)};".encode())
            digest.update(ids.tobytes())
        digest.update(b"|")
    return digest.hexdigest()
