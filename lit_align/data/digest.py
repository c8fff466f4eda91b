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


def examples_digest(examples: Sequence[dict]) -> str:
    """SHA-256 over every ``*input_ids`` and ``*labels`` list of every example, in order."""
    digest = hashlib.sha256()
    for example in examples:
        for key in sorted(k for k in example if k.endswith(("input_ids", "labels"))):
            ids = array("q", example[key])
            digest.update(f"{key}:{len(ids)};".encode())
            digest.update(ids.tobytes())
        digest.update(b"|")
    return digest.hexdigest()
