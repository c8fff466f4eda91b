"""Single-turn question/answer rows (GSM8K's ``question``/``answer``, MetaMath-style ``query``/``response``).

The answer is used verbatim, GSM8K's ``<<calc>>`` annotations and ``#### 42`` line included: stripping them
is a task-specific choice that belongs to whoever builds the eval prompt, not to the reader.
"""

from __future__ import annotations

from lit_align.data.errors import FieldError
from lit_align.data.formats._fields import message, require, sft_record

KEY_PAIRS = (("question", "answer"), ("query", "response"))


def convert(row: dict) -> list[dict]:
    """Return one user/assistant SFT record."""
    for question_key, answer_key in KEY_PAIRS:
        if question_key in row:
            question = require(row, question_key, str)
            answer = require(row, answer_key, str)
            messages = [message("user", question), message("assistant", answer)]
            return [sft_record(messages, answer_key)]
    raise FieldError("question", "missing (expected question/answer or query/response)")
