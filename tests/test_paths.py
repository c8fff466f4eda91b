"""Local path or hub name: the rule for every *_name_or_path (issue 11, item 10)."""

import pytest

from lit_align.paths import hub_offline, looks_local


@pytest.mark.parametrize(
    "path",
    ["./models/x", "../x", "/abs/model", "~/models/x", "models/", "a/b/c", "C:\\models\\x", ".", "tests/nope"],
)
def test_names_that_cannot_be_hub_ids_are_local(path):
    assert looks_local(path)  # tests/ exists here, so tests/nope is a local path, not a hub id


@pytest.mark.parametrize("path", ["gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "models/does-not-exist", "org/data.jsonl"])
def test_hub_ids_are_not_local(path):
    # models/ does not exist in the repository: models/does-not-exist could be a hub id.
    assert not looks_local(path)


def test_data_suffixes_make_a_name_local():
    assert looks_local("org/data.jsonl", suffixes=(".jsonl",))
    assert looks_local("train.JSONL", suffixes=(".jsonl",))


def test_offline_variable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline() == "HF_HUB_OFFLINE"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub_offline() is None
