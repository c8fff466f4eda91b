"""Local path or hub name: a missing local path fails at once, an unreachable hub fails at once."""

import pytest

import lit_align.data.rows as rows
from lit_align.data.read import read_source


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything reaches for the hub."""
    import datasets

    def refuse(*args, **kwargs):
        raise AssertionError(f"load_dataset called with {args}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setattr(rows, "hub_reachable", lambda: pytest.fail("hub probed for a local path"))


@pytest.mark.parametrize("path", ["data/nope", "nope/", "./nope", "../nope", "~/lit-align-surely-missing", "x.jsonl"])
def test_missing_local_looking_path_is_no_such_file(path, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        read_source(path, name="mine")
    relative = "" if path.startswith("~") else f" (relative paths start at {tmp_path})"
    assert str(err.value) == f"data source 'mine': no such file or directory: {path}{relative}"


def test_org_name_goes_to_the_hub_when_org_is_not_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_load_dataset(name, subset=None, split=None):
        calls.append(name)
        return [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records, _ = read_source("org/pairs")
    assert calls == ["org/pairs"] and len(records) == 1


def test_offline_hub_name_says_how_to_use_a_local_copy(monkeypatch):
    import datasets

    def offline_load_dataset(name, subset=None, split=None):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", offline_load_dataset)
    with pytest.raises(ConnectionError) as err:
        read_source("org/pairs", name="pairs")
    message = str(err.value)
    assert message.startswith(
        "data source 'pairs': org/pairs is not a local file or directory and is not in the local cache, "
        "and the Hugging Face hub is offline (HF_DATASETS_OFFLINE=1)"
    )
    assert "path: /local/dir/file.jsonl" in message


def test_unreachable_hub_fails_at_once(monkeypatch):
    import datasets

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset would retry"))
    monkeypatch.setattr(rows, "hub_reachable", lambda: False)
    with pytest.raises(ConnectionError) as err:
        read_source("org/pairs", name="pairs")
    message = str(err.value)
    assert message.startswith("data source 'pairs': org/pairs is not a local file or directory, and the Hugging")
    assert "cannot be reached" in message and "path: /local/dir/file.jsonl" in message


def test_offline_with_the_real_datasets_library_fails_at_once():
    """conftest.py puts the hub offline; `datasets` itself then raises ConnectionError, which gains the advice."""
    import time

    start = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        read_source("lit-align-tests/surely-not-cached", name="missing")
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert message.startswith("data source 'missing': lit-align-tests/surely-not-cached is not a local file or")
    assert "hub is offline (HF_HUB_OFFLINE=1)" in message and "path: /local/dir/file.jsonl" in message
