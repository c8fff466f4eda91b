"""PKU-SafeRLHF rows: one prompt, two responses, and two separate judgements of them.

``better_response_id`` says which response is more helpful, ``safer_response_id`` which is less harmful;
the dataset's point is that these disagree, so `axis` picks which judgement becomes chosen/rejected
(``"better"`` by default, ``"safer"`` for harmlessness training). The per-response ``is_response_*_safe``
flags are left to downstream filters; they are not needed to form the pair.
"""

from __future__ import annotations

from lit_align.data.errors import FieldError
from lit_align.data.formats._fields import message, preference_record, require

AXES = ("better", "safer")


def convert(row: dict, *, axis: str = "better") -> list[dict]:
    """Return one preference record ordered by the `axis` judgement."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    prompt = require(row, "prompt", str)
    responses = (require(row, "response_0", str), require(row, "response_1", str))
    key = f"{axis}_response_id"
    winner = require(row, key, int)
    if winner not in (0, 1):
        raise FieldError(key, f"expected 0 or 1, got {winner}")
    fields = ("prompt", f"response_{winner}", f"response_{1 - winner}")
    chosen, rejected = [message("assistant", responses[winner])], [message("assistant", responses[1 - winner])]
    return [preference_record([message("user", prompt)], chosen, rejected, fields)]
