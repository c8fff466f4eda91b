"""OpenAssistant (OASST1) message trees, as SFT threads or ranked preference pairs.

Accepted rows: a ``*.trees.jsonl`` export line ``{message_tree_id, tree_state, prompt: node}``, a root node
itself (``{message_id, text, role, replies: [...]}``), or, through `convert_table`, the flat
one-message-per-row table (HF ``OpenAssistant/oasst1`` parquet) regrouped by `build_trees`. Exports leave
out null fields, so a missing ``rank``/``deleted``/``review_result`` means null.

Nodes that are ``deleted`` or failed review (``review_result`` false) are removed with their whole subtree:
a reply to a removed message has lost its context. A malformed node (unknown role, text not a string, ...) is
removed the same way and reported as an error that names its ``message_id``, so the reader can point at the
node's own line of a flat table; the rest of the tree still counts. `convert_tree` returns those errors and
counts every removed message by reason (``oasst_deleted``, ``oasst_review_failed``, and
``oasst_reply_to_removed`` for the messages below a removed one), so no message disappears without a count.

* ``mode="sft"``: one record per tree. From the root, follow the best reply at every level (lowest
  ``rank``; the first reply when none is ranked) and cut the thread after its last assistant message. One
  thread per tree keeps a tree's prompt from being repeated across many records; the ranked-lower branches
  feed ``mode="preference"`` instead.
* ``mode="preference"``: for every prompter message with at least two ranked assistant replies, pair the
  best-ranked reply with each worse-ranked one; the prompt is the thread from the root to that message.

`langs` keeps only trees whose root message is in one of the given languages (skip reason
``oasst_lang_excluded``).
"""

from __future__ import annotations

import math
from collections import Counter

from lit_align.data.errors import FieldError, SkipRecord
from lit_align.data.formats._fields import check_type, message, preference_record, sft_record, type_name

MODES = ("sft", "preference")
_ROLES = {"prompter": "user", "assistant": "assistant"}


class NodeError(FieldError):
    """A malformed message in a tree; ``message_id`` (None when unknown) locates it in a flat table."""

    def __init__(self, field: str | None, reason: str, message_id: str | None = None) -> None:
        super().__init__(field, reason)
        self.args = (field, reason, message_id)  # pickling rebuilds the error from args
        self.message_id = message_id


def convert(row: dict, *, mode: str = "sft", langs: list[str] | None = None) -> list[dict]:
    """Return the SFT thread or the preference pairs of one tree; a malformed node raises its `NodeError`."""
    records, errors, _ = convert_tree(row, mode=mode, langs=langs)
    if errors:
        raise errors[0]
    return records


def convert_tree(
    row: dict, *, mode: str = "sft", langs: list[str] | None = None
) -> tuple[list[dict], list[NodeError], Counter]:
    """The records of one tree, the errors of its malformed nodes, and the removed messages by reason.

    Malformed nodes are left out with their subtrees; what remains is converted. Raises SkipRecord when the
    tree as a whole gives nothing (root removed, language excluded, no assistant reply or ranked pair)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    root, field = (row, "") if "message_id" in row else (row.get("prompt"), "prompt")
    if not isinstance(root, dict):
        raise FieldError(field or "prompt", f"expected a message node, got {type_name(root)}")
    errors: list[NodeError] = []
    removed: Counter = Counter()
    tree = _prune(root, field, None, errors, removed)
    if tree is None:
        if errors:
            return [], errors, removed
        raise SkipRecord("oasst_root_removed")
    if langs is not None and tree["lang"] not in langs:
        raise SkipRecord("oasst_lang_excluded")
    if mode == "sft":
        try:
            return _best_thread(tree), errors, removed
        except SkipRecord:
            if not errors:
                raise
            return [], errors, removed  # the errors explain why nothing is left
    records = []
    _collect_pairs(tree, [], records)
    if not records and not errors:
        raise SkipRecord("oasst_no_ranked_pairs")
    return records, errors, removed


def is_flat_row(row: dict) -> bool:
    """True for a row of the flat message table (has a parent pointer instead of nested replies)."""
    return "message_id" in row and "parent_id" in row and "replies" not in row


def build_trees(rows: list[dict]) -> list[dict]:
    """Nest flat message rows into root nodes with ``replies``, keeping the input order among siblings.

    Rows whose parent is not among `rows` (orphans, e.g. after filtering the table by language) are left
    out together with their subtrees; compare `count_nodes` of the result with ``len(rows)`` to count them.
    """
    nodes: dict[str, dict] = {}
    for row in rows:
        message_id = check_type(row.get("message_id"), str, "message_id")
        if message_id in nodes:
            raise FieldError("message_id", f"duplicate message_id '{message_id}'")
        nodes[message_id] = {**row, "replies": []}
    roots = []
    for node in nodes.values():
        parent = node.get("parent_id")
        if parent is None:
            roots.append(node)
        elif parent in nodes:
            nodes[parent]["replies"].append(node)
    return roots


def count_nodes(trees: list[dict]) -> int:
    """Number of nodes in nested trees."""
    return sum(1 + count_nodes(node.get("replies") or []) for node in trees)


def convert_table(rows: list[dict], **options: object) -> tuple[list[dict], Counter]:
    """Convert a flat message table; returns the records and a Counter of skip reasons.

    Conversion is per tree, so the caller groups all rows of a table first (the reader does this when the
    first row of a file is flat). Orphan messages are counted under ``orphan_message``.
    """
    trees = build_trees(rows)
    records: list[dict] = []
    skipped: Counter = Counter()
    for tree in trees:
        try:
            tree_records, errors, removed = convert_tree(tree, **options)
        except SkipRecord as skip:
            skipped[skip.reason] += 1
            continue
        if errors:
            raise errors[0]
        records.extend(tree_records)
        skipped.update(removed)
    orphans = len(rows) - count_nodes(trees)
    if orphans:
        skipped["orphan_message"] += orphans
    return records, skipped


def _prune(node: object, field: str, parent_role: str | None, errors: list[NodeError], removed: Counter) -> dict | None:
    """Validate a node and return ``{role, content, rank, lang, replies}`` without removed subtrees.

    A removed node (deleted, failed review, or malformed: appended to `errors`) returns None; it is counted in
    `removed` by reason, and the messages below it as ``oasst_reply_to_removed``."""
    if not isinstance(node, dict):
        errors.append(NodeError(field or "message", f"expected a message node, got {type_name(node)}"))
        return None
    if node.get("deleted") is True or node.get("review_result") is False:
        removed["oasst_deleted" if node.get("deleted") is True else "oasst_review_failed"] += 1
        removed["oasst_reply_to_removed"] += _below(node)
        return None
    try:
        role, text, rank, replies = _node_fields(node, field, parent_role)
    except FieldError as err:
        message_id = node.get("message_id")
        errors.append(NodeError(err.field, err.reason, message_id if isinstance(message_id, str) else None))
        removed["oasst_reply_to_removed"] += _below(node)
        return None
    children = [_prune(r, _sub(field, f"replies[{i}]"), role, errors, removed) for i, r in enumerate(replies)]
    return {
        "role": role,
        "content": text,
        "rank": rank,
        "lang": node.get("lang"),
        "replies": [c for c in children if c is not None],
    }


def _node_fields(node: dict, field: str, parent_role: str | None) -> tuple[str, str, int | None, list]:
    """Role (internal name), text, rank and replies of one node; FieldError for the first bad one."""
    role = check_type(node.get("role"), str, _sub(field, "role"))
    if role not in _ROLES:
        raise FieldError(_sub(field, "role"), f"unknown role '{role}'; expected prompter or assistant")
    if _ROLES[role] == parent_role or (parent_role is None and role != "prompter"):
        raise FieldError(_sub(field, "role"), f"'{role}' cannot follow a '{parent_role or 'tree root'}' message")
    text = check_type(node.get("text"), str, _sub(field, "text"))
    replies = node.get("replies") or []
    check_type(replies, list, _sub(field, "replies"))
    return _ROLES[role], text, _rank(node.get("rank"), _sub(field, "rank")), replies


def _below(node: dict) -> int:
    """Messages in the subtree under `node` (not counting it), tolerating malformed replies."""
    replies = node.get("replies")
    return sum(1 + _below(r) for r in replies if isinstance(r, dict)) if isinstance(replies, list) else 0


def _sub(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _rank(value: object, field: str) -> int | None:
    """Ranks come as int, null, or float/NaN when the table went through pandas."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return check_type(value, int, field)


def _best(replies: list[dict]) -> dict | None:
    ranked = [r for r in replies if r["rank"] is not None]
    if ranked:
        return min(ranked, key=lambda r: r["rank"])
    return replies[0] if replies else None


def _best_thread(tree: dict) -> list[dict]:
    thread, node = [], tree
    while node is not None:
        thread.append(message(node["role"], node["content"]))
        node = _best(node["replies"])
    while thread and thread[-1]["role"] != "assistant":
        thread.pop()
    if not thread:
        raise SkipRecord("oasst_no_assistant_reply")
    return [sft_record(thread, "prompt")]


def _collect_pairs(node: dict, path: list[dict], records: list[dict]) -> None:
    path = [*path, message(node["role"], node["content"])]
    if node["role"] == "user":
        ranked = sorted((r for r in node["replies"] if r["rank"] is not None), key=lambda r: r["rank"])
        best = ranked[0] if len(ranked) >= 2 else None
        for worse in ranked[1:]:
            if worse["rank"] > best["rank"]:
                chosen = [message("assistant", best["content"])]
                rejected = [message("assistant", worse["content"])]
                records.append(preference_record(path, chosen, rejected, ("prompt", "replies", "replies")))
    for reply in node["replies"]:
        _collect_pairs(reply, path, records)
