"""CSV cells that hold message lists, as pandas writes them: parsed, never used as prompt text."""

from collections import Counter

import pytest

from lit_align.data.errors import DataFormatError
from lit_align.data.read import read_source

pd = pytest.importorskip("pandas")

SYSTEM = {"role": "system", "content": "Answer in one word."}
USER = {"role": "user", "content": "What colour is the sky?"}
ANSWER = {"role": "assistant", "content": "Blue."}


def test_pandas_csv_of_messages_and_pairs_is_parsed(tmp_path):
    """``DataFrame.to_csv`` writes a list cell as its Python repr: "[{'role': 'system', ...}]"."""
    chat = tmp_path / "chat.csv"
    pd.DataFrame([{"messages": [SYSTEM, USER, ANSWER]}]).to_csv(chat, index=False)
    assert chat.read_text().splitlines()[1].startswith("\"[{'role': 'system', 'content': 'Answer in one word.'}")
    records, counts = read_source(str(chat))
    assert records[0]["messages"] == [SYSTEM, USER, ANSWER]
    assert counts == Counter({"rows_read": 1})

    pairs = tmp_path / "pairs.csv"
    row = {"prompt": [SYSTEM, USER], "chosen": [ANSWER], "rejected": [{"role": "assistant", "content": "绿色。"}]}
    pd.DataFrame([row]).to_csv(pairs, index=False)
    records, _ = read_source(str(pairs))
    assert records[0]["prompt"] == [SYSTEM, USER]
    assert records[0]["chosen"] == [ANSWER]
    assert records[0]["rejected"] == [{"role": "assistant", "content": "绿色。"}]


def test_json_text_cells_and_plain_text_that_starts_with_a_bracket(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(
        'prompt,chosen,rejected\n"[{""role"": ""user"", ""content"": ""Hi""}]",[INST] Hello [/INST],"[Verse 1]"\n',
        encoding="utf-8",
    )
    records, _ = read_source(str(path), "preference")
    assert records[0]["prompt"] == [{"role": "user", "content": "Hi"}]
    # Text that merely starts with a bracket stays text.
    assert records[0]["chosen"] == [{"role": "assistant", "content": "[INST] Hello [/INST]"}]
    assert records[0]["rejected"] == [{"role": "assistant", "content": "[Verse 1]"}]


def test_unparseable_message_list_names_file_line_and_field(tmp_path):
    """A NumPy array's text (pandas writes one after reading Parquet) has no commas between items."""
    path = tmp_path / "numpy.csv"
    cell = "[{'role': 'user', 'content': 'Hi'}\n {'role': 'assistant', 'content': 'Hello'}]"
    pd.DataFrame([{"messages": cell}, {"messages": cell}]).to_csv(path, index=False)
    with pytest.raises(DataFormatError) as err:
        read_source(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}:1: field 'messages': looks like a list of messages but is neither JSON nor")
    assert "to_json" in message
    records, counts = read_source(str(path), on_error="skip")
    assert records == [] and counts == Counter({"rows_read": 2, "error:messages": 2})
