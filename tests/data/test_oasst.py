"""OASST message trees: pruning, best-reply threads, ranked pairs, and the flat table regrouped into trees."""

import json
from collections import Counter
from pathlib import Path

import pytest

from lit_align.data.errors import DataFormatError, FieldError, SkipRecord
from lit_align.data.formats import FORMATS, oasst
from lit_align.data.read import read_source

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared samples not found at {SHARED}")


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def _node(mid, role, text, rank=None, replies=(), **extra):
    return {"message_id": mid, "role": role, "text": text, "rank": rank, "replies": list(replies), **extra}


def _tree():
    """Q1 has three ranked answers plus a deleted and a review-failed one; the best answer has an
    unranked follow-up thread."""
    follow_up = _node(
        "p2",
        "prompter",
        "Q2",
        replies=[_node("b0", "assistant", "unranked first"), _node("b1", "assistant", "unranked second")],
    )
    answers = [
        _node("a2", "assistant", "second", rank=1),
        _node("a1", "assistant", "best", rank=0, replies=[follow_up]),
        _node("a3", "assistant", "third", rank=2),
        _node("ad", "assistant", "deleted", rank=3, deleted=True),
        _node("ar", "assistant", "failed review", review_result=False),
    ]
    return {
        "message_tree_id": "t",
        "tree_state": "ready_for_export",
        "prompt": _node("p", "prompter", "Q1", replies=answers),
    }


def test_oasst_handwritten_tree():
    tree = _tree()
    assert FORMATS["oasst"](tree) == [{"messages": [u("Q1"), a("best"), u("Q2"), a("unranked first")]}]
    pairs = FORMATS["oasst"](tree, mode="preference")
    assert pairs == [
        {"prompt": [u("Q1")], "chosen": [a("best")], "rejected": [a("second")]},
        {"prompt": [u("Q1")], "chosen": [a("best")], "rejected": [a("third")]},
    ]
    with pytest.raises(SkipRecord, match="oasst_lang_excluded"):
        FORMATS["oasst"](tree, langs=["zh"])
    tree["prompt"]["replies"][0]["role"] = "bot"
    with pytest.raises(FieldError) as err:
        FORMATS["oasst"](tree)
    assert err.value.field == "prompt.replies[0].role"


def _flatten(node, tree_id, out):
    out.append(
        {
            "message_id": node["message_id"],
            "parent_id": node.get("parent_id"),
            "role": node["role"],
            "text": node["text"],
            "lang": node.get("lang"),
            "rank": node.get("rank"),
            "deleted": node.get("deleted"),
            "review_result": node.get("review_result"),
            "message_tree_id": tree_id,
        }
    )
    for reply in node.get("replies", []):
        _flatten(reply, tree_id, out)
    return out


def shared_flat_table():
    """The shared tree export turned into the flat one-message-per-row layout of HF oasst1."""
    flat = []
    for line in open(SHARED / "oasst_trees.en100.jsonl", encoding="utf-8"):
        tree = json.loads(line)
        _flatten(tree["prompt"], tree["message_tree_id"], flat)
    return flat


@needs_shared
@pytest.mark.parametrize("mode", ["sft", "preference"])
def test_oasst_flat_table_matches_nested(mode):
    nested = []
    for line in open(SHARED / "oasst_trees.en100.jsonl", encoding="utf-8"):
        nested.extend(FORMATS["oasst"](json.loads(line), mode=mode))
    flat = shared_flat_table()
    assert len(flat) == 1167
    records, skipped = oasst.convert_table(flat, mode=mode)
    assert records == nested
    assert skipped == Counter()
    # Dropping a root leaves its messages orphaned, and they are counted.
    root_id = flat[0]["message_id"]
    tree_size = sum(r["message_tree_id"] == root_id for r in flat)
    _, skipped = oasst.convert_table(flat[1:], mode=mode)
    assert skipped == Counter({"orphan_message": tree_size - 1})


@needs_shared
def test_oasst_flat_parquet_through_reader(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    flat = shared_flat_table()
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "oasst1.parquet")
    nested, _ = read_source(str(SHARED / "oasst_trees.en100.jsonl"), options={"mode": "preference"})
    records, counts = read_source(str(tmp_path / "oasst1.parquet"), options={"mode": "preference"})
    assert counts == Counter({"rows_read": 1167})
    assert [r["chosen"] for r in records] == [r["chosen"] for r in nested]
    roots = {i for i, row in enumerate(flat, start=1) if row["parent_id"] is None}
    assert {r["row"] for r in records} <= roots
    sft, _ = read_source(str(tmp_path / "oasst1.parquet"))
    assert len(sft) == 100


def _flat_rows(node, parent=None, out=None):
    """A handwritten tree as flat table rows (one message per line), parents before children."""
    out = [] if out is None else out
    out.append({**{k: v for k, v in node.items() if k != "replies"}, "parent_id": parent, "lang": "en"})
    for reply in node["replies"]:
        _flat_rows(reply, node["message_id"], out)
    return out


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_flat_table_error_names_the_replys_own_line_and_keeps_the_rest(tmp_path, caplog):
    rows = _flat_rows(_tree()["prompt"])
    assert [r["message_id"] for r in rows] == ["p", "a2", "a1", "p2", "b0", "b1", "a3", "ad", "ar"]
    rows[6]["role"] = "bot"  # a3, line 7
    path = _write_jsonl(tmp_path / "flat.jsonl", rows)
    with pytest.raises(DataFormatError) as err:
        read_source(str(path), options={"mode": "preference"})
    assert str(err.value) == f"{path}:7: field 'role': unknown role 'bot'; expected prompter or assistant"
    records, counts = read_source(str(path), options={"mode": "preference"}, on_error="skip")
    # Only the broken reply goes: the best/second pair of the same tree stays.
    assert [(r["chosen"], r["rejected"]) for r in records] == [([a("best")], [a("second")])]
    assert counts == Counter({"rows_read": 9, "error:role": 1, "oasst_deleted": 1, "oasst_review_failed": 1})
    assert f"{path}:7: field 'role'" in caplog.text


def test_nested_tree_keeps_valid_pairs_and_counts_pruned_replies(tmp_path):
    tree = _tree()
    path = _write_jsonl(tmp_path / "trees.jsonl", [tree])
    records, counts = read_source(str(path), options={"mode": "preference"})
    assert len(records) == 2
    assert counts == Counter({"rows_read": 1, "oasst_deleted": 1, "oasst_review_failed": 1})
    tree["prompt"]["replies"][2]["text"] = None  # "third"
    path = _write_jsonl(tmp_path / "broken.jsonl", [tree])
    with pytest.raises(DataFormatError, match=r"broken.jsonl:1: field 'prompt.replies\[2\].text': expected a string"):
        read_source(str(path), options={"mode": "preference"})
    records, counts = read_source(str(path), options={"mode": "preference"}, on_error="skip")
    assert [(r["chosen"], r["rejected"]) for r in records] == [([a("best")], [a("second")])]
    assert counts["error:prompt.replies[2].text"] == 1 and counts["oasst_deleted"] == 1


def test_pruned_subtrees_are_counted_message_by_message():
    """A deleted reply takes its replies with it; they are counted as replies to a removed message."""
    tree = _tree()
    tree["prompt"]["replies"][1]["deleted"] = True  # "best", which holds the follow-up thread of 3 messages
    _, _, counts = oasst.convert_tree(tree, mode="preference")
    assert counts == Counter({"oasst_deleted": 2, "oasst_review_failed": 1, "oasst_reply_to_removed": 3})
