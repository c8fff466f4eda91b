"""Field checks and record builders shared by the format converters.

Every converter ends in `sft_record` or `preference_record`, so the internal schema is enforced in one
place: roles are system/user/assistant/tool, contents are strings, an SFT conversation ends with an
assistant turn, a preference prompt ends with a user (or tool) turn and both completions are assistant turns.
Field names in errors are paths into the row (``conversations[2].from``) so a user can find the bad value.
"""

from __future__ import annotations

from collections.abc import Mapping

from lit_align.data.errors import FieldError

ROLES = ("system", "user", "assistant", "tool")
PROMPT_END_ROLES = ("user", "tool")
COMPLETION_ROLES = ("assistant", "tool")

_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "an integer", float: "a number", bool: "a bool"}


def type_name(value: object) -> str:
    """Describe a JSON value's type for error messages ('str', 'list', 'null')."""
    return "null" if value is None else type(value).__name__


def require(row: Mapping, key: str, kind: type | tuple[type, ...], field: str | None = None) -> object:
    """Return ``row[key]``, raising FieldError when it is missing or not of `kind`."""
    field = field or key
    if key not in row or row[key] is None:
        raise FieldError(field, "missing")
    return check_type(row[key], kind, field)


def optional(row: Mapping, key: str, kind: type | tuple[type, ...], default: object = None) -> object:
    """Return ``row[key]`` or `default` when absent or null; a present value must be of `kind`."""
    if row.get(key) is None:
        return default
    return check_type(row[key], kind, key)


def check_type(value: object, kind: type | tuple[type, ...], field: str) -> object:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass, but a True where a count or id belongs is a data bug.
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise FieldError(field, f"expected {expected}, got {type_name(value)}")
    return value


def number(row: Mapping, key: str) -> float:
    """Return a required int/float field as float."""
    return float(require(row, key, (int, float)))


def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def content_text(value: object, field: str) -> str:
    """Accept a string or OpenAI-style text parts ``[{"type": "text", "text": ...}]`` joined together."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(check_type(p.get("text"), str, f"{field}.text") for p in value)
    raise FieldError(field, f"expected a string, got {type_name(value)}")


def parse_messages(
    value: object,
    field: str,
    *,
    role_key: str = "role",
    content_key: str = "content",
    role_map: Mapping[str, str] | None = None,
    allow_single: bool = False,
) -> list[dict]:
    """Validate a list of message objects and return them as ``{"role", "content"}`` dicts.

    `role_map` translates source role names (ShareGPT's ``human``/``gpt``); without it roles must already be
    one of `ROLES`. `allow_single` also accepts one bare message object (ShareGPT preference completions).
    """
    if allow_single and isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise FieldError(field, f"expected a list of messages, got {type_name(value)}")
    known = role_map or {r: r for r in ROLES}
    messages = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise FieldError(where, f"expected a message object, got {type_name(item)}")
        role = require(item, role_key, str, f"{where}.{role_key}")
        if role not in known:
            raise FieldError(f"{where}.{role_key}", f"unknown role '{role}'; expected one of {', '.join(known)}")
        if item.get(content_key) is None:
            raise FieldError(f"{where}.{content_key}", "missing")
        messages.append(message(known[role], content_text(item[content_key], f"{where}.{content_key}")))
    return messages


def as_messages(value: object, field: str, role: str) -> list[dict]:
    """A plain string becomes one message with `role`; a list is parsed as messages."""
    if isinstance(value, str):
        return [message(role, value)]
    if isinstance(value, list):
        return parse_messages(value, field)
    raise FieldError(field, f"expected a string or a list of messages, got {type_name(value)}")


def join_prompt(instruction: str, extra: str) -> str:
    """Alpaca convention: the input, when present, follows the instruction after a blank line."""
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def pairs_history(value: object, field: str = "history") -> list[dict]:
    """Alpaca ``history``: earlier turns as ``[[user, assistant], ...]``."""
    check_type(value, list, field)
    messages = []
    for i, turn in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(turn, (list, tuple)) or len(turn) != 2:
            raise FieldError(where, f"expected a [user, assistant] pair, got {type_name(turn)}")
        messages.append(message("user", check_type(turn[0], str, f"{where}[0]")))
        messages.append(message("assistant", check_type(turn[1], str, f"{where}[1]")))
    return messages


def strip_prompt(prompt: list[dict], completion: list[dict]) -> list[dict]:
    """Drop a leading copy of the prompt from a completion given as a full conversation (TRL/H4 style)."""
    n = len(prompt)
    if len(completion) > n and all(_same(a, b) for a, b in zip(prompt, completion, strict=False)):
        return completion[n:]
    return completion


def split_shared_prefix(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Split two full conversations into (prompt, chosen, rejected).

    The prompt is the longest shared prefix of turns, cut back so that it ends with a user or tool turn:
    the completions then start at the first assistant turn after the last shared user turn.
    """
    n = 0
    while n < min(len(chosen), len(rejected)) and _same(chosen[n], rejected[n]):
        n += 1
    while n > 0 and chosen[n - 1]["role"] not in PROMPT_END_ROLES:
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def _same(a: dict, b: dict) -> bool:
    return a["role"] == b["role"] and a["content"].strip() == b["content"].strip()


def sft_record(messages: list[dict], field: str) -> dict:
    """Build an SFT record after checking the conversation has something to learn from."""
    if not messages:
        raise FieldError(field, "conversation is empty")
    if messages[-1]["role"] != "assistant":
        raise FieldError(field, f"conversation must end with an assistant message, got '{messages[-1]['role']}'")
    return {"messages": messages}


def preference_record(prompt: list[dict], chosen: list[dict], rejected: list[dict], fields: tuple[str, ...]) -> dict:
    """Build a preference record; `fields` names the row fields of (prompt, chosen, rejected) for errors."""
    prompt_field, chosen_field, rejected_field = fields
    if not prompt:
        raise FieldError(prompt_field, "prompt is empty")
    if prompt[-1]["role"] not in PROMPT_END_ROLES:
        raise FieldError(prompt_field, f"prompt must end with a user or tool message, got '{prompt[-1]['role']}'")
    for name, completion in ((chosen_field, chosen), (rejected_field, rejected)):
        if not completion:
            raise FieldError(name, "no assistant message after the prompt")
        bad = [m["role"] for m in completion if m["role"] not in COMPLETION_ROLES]
        if bad:
            raise FieldError(name, f"completion may only hold assistant/tool messages, got '{bad[0]}'")
        if completion[-1]["role"] != "assistant":
            raise FieldError(name, f"completion must end with an assistant message, got '{completion[-1]['role']}'")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
