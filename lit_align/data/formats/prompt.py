"""Prompt-only rows with a verifiable answer, the data of RL from verifiable rewards (GRPO, expert iteration).

A prompt record is ``{"prompt": [messages ending with a user or tool turn], "ground_truth": str, "fields": {...}}``.
The model writes the answer itself; ``ground_truth`` is what a reward function checks it against, and ``fields``
holds every scalar column of the row (plus ``ground_truth``), because reward functions receive them as keyword
arguments, as in TRL: a reward for GSM8K may want ``answer`` with its worked solution, another a ``level`` column.

One converter reads every layout such data comes in, so ``format: auto`` under ``task: prompt`` can always read a
source as ``prompt`` and keep its columns: ``prompt`` or ``question``/``query`` with an answer column, ``messages``
ending with a user turn plus an answer column, and chat rows whose last assistant turn is the answer. Rows in any
other SFT layout (alpaca, sharegpt, ...) are read by their own format, then take the last-assistant-turn rule.
Preference pairs are refused: two completions are not one ground truth.
"""

from __future__ import annotations

from lit_align.data.errors import FieldError
from lit_align.data.formats._fields import PROMPT_END_ROLES, as_messages, parse_messages, require, type_name

GROUND_TRUTH_KEYS = ("ground_truth", "answer", "solution")
"""Where a prompt row keeps its answer, in the order they are looked for."""
QUERY_GROUND_TRUTH_KEYS = (*GROUND_TRUTH_KEYS, "response")
"""MetaMath-style ``query`` rows also keep it under ``response``."""
_PROMPT_KEYS = (("prompt", GROUND_TRUTH_KEYS), ("question", GROUND_TRUTH_KEYS), ("query", QUERY_GROUND_TRUTH_KEYS))
"""Keys that hold the prompt itself, in the order they are looked for, with where each layout keeps its answer."""
PREFERENCE_REASON = (
    "preference pairs have no single ground truth to reward against; task prompt (GRPO, expert iteration) needs "
    "rows with a prompt and its answer (prompt/question + ground_truth/answer/solution)"
)


def convert(row: dict) -> list[dict]:
    """Return one prompt record; see the module docstring for the layouts, tried in the order written there."""
    if "chosen" in row or "rejected" in row:
        raise FieldError("chosen" if "chosen" in row else "rejected", PREFERENCE_REASON)
    for key, truth_keys in _PROMPT_KEYS:
        if key in row:
            prompt = _prompt_messages(row, key)
            return [prompt_record(prompt, ground_truth(row, truth_keys)[1], _scalars(row, key))]
    if "messages" in row:
        return [_from_messages(row)]
    return _from_other_format(row)


def prompt_record(prompt: list[dict], truth: str, fields: dict | None = None) -> dict:
    """The internal prompt record; ``fields`` gains ``ground_truth`` (reward functions always get it)."""
    return {"prompt": prompt, "ground_truth": truth, "fields": {**(fields or {}), "ground_truth": truth}}


def from_conversation(messages: list[dict], field: str, fields: dict | None = None) -> dict:
    """A chat that ends with an assistant turn as a prompt record: the prompt runs through the last user turn,
    the ground truth is the last assistant message (the answer the data set holds as correct)."""
    if not messages:
        raise FieldError(field, "conversation is empty")
    last = messages[-1]
    if last["role"] != "assistant":
        raise FieldError(
            field,
            f"a prompt row's messages end with a user turn (then its answer goes in 'ground_truth'), or with the "
            f"assistant's answer; got '{last['role']}'",
        )
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise FieldError(field, "no user message to take the prompt from")
    truth = _text_truth(last["content"], f"{field}[{len(messages) - 1}].content")
    return prompt_record(messages[: users[-1] + 1], truth, fields)


def ground_truth(row: dict, keys: tuple[str, ...] = GROUND_TRUTH_KEYS) -> tuple[str, str]:
    """``(key, text)`` of the first of ``keys`` the row holds (null counts as absent). Numbers become their text
    (7 -> "7", 2.5 -> "2.5"); a bool, list, object or empty string is an error naming the key."""
    for key in keys:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise FieldError(key, f"expected the answer as a string or a number, got {type_name(value)}")
        return key, _text_truth(value, key) if isinstance(value, str) else str(value)
    raise FieldError(keys[0], f"missing: a prompt row needs its answer under one of {', '.join(keys)}")


def has_ground_truth(row: dict) -> bool:
    """Whether the row holds one of the ground-truth keys (the detection rule; values are checked on reading)."""
    return any(key in row for key in GROUND_TRUTH_KEYS)


def _text_truth(text: str, field: str) -> str:
    if not text.strip():
        raise FieldError(field, "the answer is empty")
    return text


def _prompt_messages(row: dict, key: str) -> list[dict]:
    """The row's prompt (a string is one user turn), checked to end with a user or tool turn."""
    prompt = as_messages(require(row, key, (str, list)), key, "user")
    if not prompt:
        raise FieldError(key, "prompt is empty")
    if prompt[-1]["role"] not in PROMPT_END_ROLES:
        raise FieldError(key, f"prompt must end with a user or tool message, got '{prompt[-1]['role']}'")
    if not any(m["role"] == "user" for m in prompt):
        raise FieldError(key, "no user message: a prompt needs the user's question")
    return prompt


def _from_messages(row: dict) -> dict:
    """``messages`` with an answer column (the prompt runs through the last user turn), or a chat whose last
    assistant turn is the answer."""
    messages = parse_messages(require(row, "messages", list), "messages")
    fields = _scalars(row, "messages")
    if not has_ground_truth(row):
        return from_conversation(messages, "messages", fields)
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise FieldError("messages", "no user message to take the prompt from")
    # A trailing tool turn is the prompt's end too; a trailing assistant turn (a worked solution beside a short
    # answer column) is left out: the answer column is the ground truth.
    end = len(messages) if messages[-1]["role"] in PROMPT_END_ROLES else users[-1] + 1
    return prompt_record(messages[:end], ground_truth(row)[1], fields)


def _from_other_format(row: dict) -> list[dict]:
    """Rows of another SFT layout: read by their own converter, then the last assistant turn is the answer."""
    from lit_align.data.formats import FORMATS, detect_format  # here: that module imports this one

    name = detect_format(row)
    records = FORMATS[name](row)
    if any("chosen" in record for record in records):
        raise FieldError(None, f"the row is '{name}' preference data: {PREFERENCE_REASON}")
    return [from_conversation(record["messages"], name) for record in records]


def _scalars(row: dict, prompt_key: str) -> dict:
    """Every top-level str/int/float/bool value of the row but the prompt's own: the reward functions' kwargs."""
    return {k: v for k, v in row.items() if k != prompt_key and isinstance(v, (str, int, float, bool))}
