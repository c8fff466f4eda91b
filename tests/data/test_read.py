"""Reading sources: container formats, provenance, and errors that name file, line and field."""

import csv
import gzip
import json
import logging
import pickle
from collections import Counter
from pathlib import Path

import pytest

from lit_align.data.errors import DataFormatError
from lit_align.data.read import read_source
from lit_align.data.rows import iter_rows

ALPACA = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
SHAREGPT = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def dump(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False)


def test_data_format_error_message_and_pickle():
    err = DataFormatError("data/x.jsonl", 17, "chosen", "expected a list of messages, got str")
    assert str(err) == "data/x.jsonl:17: field 'chosen': expected a list of messages, got str"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    assert str(DataFormatError("data/x.jsonl", 3, None, "invalid JSON")) == "data/x.jsonl:3: invalid JSON"


def test_bad_json_on_line_3(tmp_path):
    path = write_lines(tmp_path / "broken.jsonl", [dump(ALPACA), dump(ALPACA), '{"instruction": "x", "output": '])
    with pytest.raises(DataFormatError) as err:
        read_source(str(path))
    assert err.value.line == 3 and err.value.field is None
    assert "broken.jsonl:3: invalid JSON" in str(err.value)


def test_missing_field_on_line_2(tmp_path):
    path = write_lines(tmp_path / "missing.jsonl", [dump(ALPACA), dump({"instruction": "q", "input": ""})])
    with pytest.raises(DataFormatError) as err:
        read_source(str(path))
    assert "missing.jsonl:2: field 'output': missing" in str(err.value)


def test_unknown_role(tmp_path):
    bad = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]}
    path = write_lines(tmp_path / "roles.jsonl", [dump(SHAREGPT), dump(SHAREGPT), dump(SHAREGPT), dump(bad)])
    with pytest.raises(DataFormatError) as err:
        read_source(str(path), "sharegpt")
    assert "roles.jsonl:4: field 'conversations[1].from': unknown role 'bot'" in str(err.value)


def test_wrongly_typed_field(tmp_path):
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": ["a"], "rejected": "b"}]
    path = write_lines(tmp_path / "types.jsonl", [dump(r) for r in rows])
    with pytest.raises(DataFormatError) as err:
        read_source(str(path))
    assert "types.jsonl:2: field 'chosen[0]': expected a message object, got str" in str(err.value)
    path = write_lines(tmp_path / "types2.jsonl", [dump({"messages": "hello"})])
    expected = r"types2.jsonl:1: field 'messages': expected a list of messages, got str"
    with pytest.raises(DataFormatError, match=expected):
        read_source(str(path))


def test_non_object_row(tmp_path):
    path = write_lines(tmp_path / "list.jsonl", [dump(ALPACA), "[1, 2]"])
    with pytest.raises(DataFormatError, match=r"list.jsonl:2: expected a JSON object, got array"):
        read_source(str(path))


def test_skip_counts_errors_and_continues(tmp_path, caplog):
    lines = [
        dump(ALPACA),
        dump({"instruction": "q", "input": ""}),
        "not json",
        dump({**ALPACA, "output": 5}),
        "[]",
        dump({**ALPACA, "instruction": "Add 1 and 1.", "output": "2"}),
    ]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="lit_align.data.read"):
        records, counts = read_source(str(path), on_error="skip")
    assert [r["row"] for r in records] == [1, 6]
    assert counts == Counter({"rows_read": 6, "error:output": 2, "error:row": 2})
    assert "mixed.jsonl:2: field 'output': missing" in caplog.text
    assert "mixed.jsonl:3: invalid JSON" in caplog.text


def test_undetectable_format_names_file(tmp_path):
    path = write_lines(tmp_path / "odd.jsonl", [dump({"foo": 1})])
    with pytest.raises(DataFormatError, match=r"odd.jsonl:1: cannot detect the data format"):
        read_source(str(path))
    with pytest.raises(ValueError, match="unknown format"):
        read_source(str(path), "nope")
    with pytest.raises(FileNotFoundError):
        read_source(str(tmp_path / "absent.jsonl"))


def test_containers_agree(tmp_path):
    rows = [ALPACA, {**ALPACA, "instruction": "Add 1 and 1.", "output": "2"}]
    (tmp_path / "array.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    write_lines(tmp_path / "lines.json", [dump(r) for r in rows])
    with gzip.open(tmp_path / "zipped.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(dump(r) + "\n" for r in rows))
    with open(tmp_path / "table.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(ALPACA))
        writer.writeheader()
        writer.writerows(rows)
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "table.parquet")
    outputs = {}
    for name in ("array.json", "lines.json", "zipped.jsonl.gz", "table.csv", "table.parquet"):
        records, counts = read_source(str(tmp_path / name))
        assert counts == Counter({"rows_read": 2})
        outputs[name] = [(r["messages"], r["row"]) for r in records]
        assert records[0]["source"] == name.split(".")[0]
    assert len({json.dumps(v) for v in outputs.values()}) == 1


def test_directory_reads_files_in_order_with_per_file_lines(tmp_path):
    write_lines(tmp_path / "b.jsonl", [dump(SHAREGPT), dump(SHAREGPT)])
    write_lines(tmp_path / "a.jsonl", [dump(ALPACA)])
    (tmp_path / "notes.txt").write_text("ignored")
    triples = [(Path(f).name, line) for f, line, _ in iter_rows(str(tmp_path))]
    assert triples == [("a.jsonl", 1), ("b.jsonl", 1), ("b.jsonl", 2)]
    records, counts = read_source(str(tmp_path), name="mix")
    assert [r["row"] for r in records] == [1, 1, 2]
    assert {r["source"] for r in records} == {"mix"}
    assert counts["rows_read"] == 3


def test_blank_lines_keep_line_numbers(tmp_path):
    path = write_lines(tmp_path / "gaps.jsonl", [dump(ALPACA), "", dump({"instruction": "q"})])
    with pytest.raises(DataFormatError, match=r"gaps.jsonl:3: field 'output'"):
        read_source(str(path))


def test_hub_names_go_through_load_dataset_with_split_and_subset(monkeypatch):
    calls = []

    def fake_load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}, {"prompt": "Hi", "chosen": "Yo"}]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records, counts = read_source("org/pairs", "preference", split="test", subset="en", on_error="skip")
    assert calls == [("org/pairs", "en", "test")]
    assert len(records) == 1 and records[0]["source"] == "org/pairs" and records[0]["row"] == 1
    assert counts["rows_read"] == 2 and counts["error:rejected"] == 1
