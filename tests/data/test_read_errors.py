"""Errors that say where: bad bytes, empty sources, a declared format that does not fit, ambiguous rows, and
the column of a broken JSON line. Every line number is 1-based, the number an editor shows."""

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from lit_align.data.errors import DataFormatError
from lit_align.data.examples import tokenize_record
from lit_align.data.prepare import DataSource, PrepareSettings, prepare_sources
from lit_align.data.read import read_source

ALPACA = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
PAIR = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


def dump(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---- item 6: bytes that are not UTF-8 -------------------------------------------------------------------


def _gbk_file(path: Path) -> Path:
    """Line 2 holds GBK bytes (what a Windows editor in a Chinese locale saves); lines 1 and 3 are UTF-8."""
    good = dump(ALPACA).encode("utf-8")
    bad = '{"instruction": "你好", "input": "", "output": "好"}'.encode("gbk")
    other = dump({**ALPACA, "output": "five"}).encode("utf-8")
    path.write_bytes(good + b"\n" + bad + b"\n" + other + b"\n")
    return path


def test_non_utf8_line_names_file_and_line(tmp_path):
    path = _gbk_file(tmp_path / "gbk.jsonl")
    with pytest.raises(DataFormatError) as err:
        read_source(str(path))
    # '{"instruction": "' is 17 characters, so the first GBK byte (0xc4 of 你) is column 18.
    assert str(err.value).startswith(f"{path}:2: not valid UTF-8 (byte 0xc4 at column 18)")
    assert "save the file as UTF-8" in str(err.value)


def test_non_utf8_line_is_skipped_and_counted(tmp_path, caplog):
    path = _gbk_file(tmp_path / "gbk.jsonl")
    with caplog.at_level(logging.WARNING, logger="lit_align.data.read"):
        records, counts = read_source(str(path), on_error="skip")
    assert [r["messages"][-1]["content"] for r in records] == ["5", "five"]
    assert counts == Counter({"rows_read": 3, "error:encoding": 1})
    assert f"{path}:2: not valid UTF-8" in caplog.text


def test_non_utf8_in_csv_and_json_array(tmp_path):
    csv_path = tmp_path / "table.csv"
    csv_path.write_bytes(b"instruction,input,output\nAdd,,5\n" + "你好,,好\n".encode("gbk"))
    with pytest.raises(DataFormatError, match=r"table.csv:2: not valid UTF-8"):
        read_source(str(csv_path))
    records, counts = read_source(str(csv_path), on_error="skip")
    assert len(records) == 1 and counts == Counter({"rows_read": 2, "error:encoding": 1})
    array = tmp_path / "array.json"
    array.write_bytes(b"[\n" + dump(ALPACA).encode() + b",\n" + '{"output": "好"}'.encode("gbk") + b"\n]\n")
    with pytest.raises(DataFormatError, match=r"array.json:3: not valid UTF-8"):
        read_source(str(array))


# ---- item 7: empty sources ------------------------------------------------------------------------------


def test_empty_and_blank_files_are_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    write_lines(tmp_path / "blank.jsonl", ["", "   ", ""])
    (tmp_path / "nothing.json").write_text("[]")
    for name in ("empty.jsonl", "blank.jsonl", "nothing.json"):
        with pytest.raises(DataFormatError) as err:
            read_source(str(tmp_path / name), name="mine")
        assert str(err.value) == f"{tmp_path / name}: data source 'mine': the file has no rows (it is empty)"


def test_empty_directory_and_empty_file_in_a_directory(tmp_path):
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    with pytest.raises(DataFormatError, match=r"empty_dir: no data files \(.jsonl"):
        read_source(str(empty_dir))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_lines(mixed / "a.jsonl", [dump(ALPACA)])
    (mixed / "b.jsonl").write_text("\n")
    records, counts = read_source(str(mixed))
    assert len(records) == 1 and counts == Counter({"rows_read": 1, "empty_file": 1})
    (mixed / "a.jsonl").write_text("")
    with pytest.raises(DataFormatError, match=r"a.jsonl: data source 'mixed': the file has no rows"):
        read_source(str(mixed))


def test_source_without_examples_is_an_error_that_names_it(tmp_path, tokenizer):
    """Every row broken and skipped: the source yields nothing, which a run must not accept silently (the
    sampler would say only 'need at least one example ... got 0 examples')."""
    path = write_lines(tmp_path / "broken.jsonl", [dump({**ALPACA, "output": 5}), "not json"])
    settings = PrepareSettings(on_error="skip")
    with pytest.raises(ValueError) as err:
        prepare_sources([DataSource(str(path))], tokenizer, settings)
    message = str(err.value)
    assert message.startswith(f"data source 'broken' ({path}) gave no examples: 2 rows read")
    assert "error/output: 1" in message and "error/row: 1" in message


# ---- item 8: the declared format does not fit ------------------------------------------------------------


def test_declared_format_that_does_not_fit_says_what_the_rows_look_like(tmp_path):
    chat = write_lines(tmp_path / "chat.jsonl", [dump(CHAT)])
    with pytest.raises(DataFormatError) as err:
        read_source(str(chat), "preference")
    assert str(err.value) == (
        f"{chat}:1: field 'chosen': missing; the rows look like 'messages' data, not 'preference': "
        "set format: messages (or format: auto)"
    )
    pairs = write_lines(tmp_path / "pairs.jsonl", [dump(PAIR)])
    with pytest.raises(DataFormatError, match=r"the rows look like 'preference' data, not 'messages'"):
        read_source(str(pairs), "messages")


# ---- item 9: rows that hold both readings; 1-based rows everywhere ---------------------------------------


def test_rows_with_messages_and_a_pair_are_read_as_preference(tmp_path, caplog):
    both = {**CHAT, **PAIR}
    path = write_lines(tmp_path / "both.jsonl", [dump(both), dump(both)])
    with caplog.at_level(logging.WARNING, logger="lit_align.data.read"):
        records, _ = read_source(str(path))
    assert records[0]["chosen"] == [{"role": "assistant", "content": "4"}]
    assert "rows have both 'messages' and prompt/chosen/rejected: reading them as 'preference'" in caplog.text
    assert "set format: messages to train on 'messages'" in caplog.text


def test_record_rows_are_the_1_based_lines_errors_print(tmp_path, tokenizer):
    other = {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]}
    path = write_lines(tmp_path / "chat.jsonl", [dump(CHAT), "", dump(other)])
    records, _ = read_source(str(path))
    assert [r["row"] for r in records] == [1, 3]
    with pytest.raises(ValueError) as err:
        tokenize_record(records[1], tokenizer, PrepareSettings(task="preference"), Counter())
    assert "source 'chat' line 3 is chat (SFT) data" in str(err.value)


# ---- item 12: the column where the JSON broke --------------------------------------------------------------


def test_json_error_column_is_where_the_json_broke(tmp_path):
    cut = '{"instruction": "Add 2 and 3.", "out'
    path = write_lines(tmp_path / "cut.jsonl", [dump(ALPACA), cut])
    with pytest.raises(DataFormatError) as err:
        read_source(str(path))
    # The line is 36 characters long; the unterminated string "out starts at its character 33.
    assert str(err.value) == (
        f"{path}:2: invalid JSON: Unterminated string starting at column 33; the line ends after column 36 "
        "before the JSON is complete (cut short?)"
    )
    comma = '{"a": 1 "b": 2}'
    path = write_lines(tmp_path / "comma.jsonl", [comma])
    with pytest.raises(DataFormatError) as err:
        read_source(str(path))
    assert str(err.value) == f"{path}:1: invalid JSON: Expecting ',' delimiter at column 9"
