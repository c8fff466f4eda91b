"""The prepared-data cache: a second identical set-up tokenises nothing, any changed input misses, and what comes
from the cache (examples, records, reports, data card, sampler plan) equals what preparation makes."""

import logging
import shutil
from pathlib import Path

import pytest

import lit_align.data.parallel as parallel
import lit_align.data.splits as splits
from lit_align.data.cache import DATA_CACHE_VERSION, default_cache_dir
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.digest import examples_digest
from lit_align.data.prepare import PrepareSettings
from lit_align.data.table import ExampleTable, column, encode_examples
from lit_align.run_record import data_summary
from lit_align.tokenizer import load_tokenizer

from ..conftest import ROOT, SHARED_DATA, TINY_MODEL

HH = SHARED_DATA / "hh_rlhf_harmless_base.test.jsonl"
ZH = SHARED_DATA / "llamafactory_oaast_rm_zh.train.jsonl"
ARITHMETIC = ROOT / "assets" / "arithmetic"


@pytest.fixture
def tokenized(monkeypatch) -> list[int]:
    """Counts calls of the per-record tokenisation (one element per call)."""
    calls = []
    real = parallel.tokenize_record

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(parallel, "tokenize_record", counting)
    return calls


@pytest.fixture
def data_files(tmp_path):
    """The first 40 HH-RLHF pairs and the first 30 Chinese rows, as files of their own (so tests may change them)."""
    paths = {}
    for name, source, rows in (("hh", HH, 40), ("zh", ZH, 30)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:rows]))
    return paths


def _data(files, cache_dir, tokenizer=TINY_MODEL, **kwargs) -> AlignDataModule:
    settings = dict(task="preference", max_length=512, batch_size=4, max_truncated_fraction=1.0, target_zh_share=0.5)
    data = AlignDataModule(
        [DataSource(str(files["hh"]), name="hh"), DataSource(str(files["zh"]), name="zh", weight=2.0)],
        val=[DataSource(str(files["hh"]), name="hh_val")],
        tokenizer=str(tokenizer),
        cache_dir=str(cache_dir),
        **{**settings, **kwargs},
    )
    data.setup()
    return data


def _tokenized(data) -> int:
    return sum(report.tokenized for report in data.reports)


def _entries(cache_dir) -> list:
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.startswith("."))


pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")


def test_second_identical_setup_is_a_hit_without_tokenising(data_files, tmp_path, tokenized, monkeypatch):
    cache = tmp_path / "cache"
    first = _data(data_files, cache)
    assert len(tokenized) == _tokenized(first.train_data) + _tokenized(first.val_data) > 0
    assert len(_entries(cache)) == 2  # train and val
    tokenized.clear()
    logged = []
    monkeypatch.setattr(splits, "rank_zero_info", logged.append)
    second = _data(data_files, cache)
    assert tokenized == []
    assert logged[0].startswith(f"data: train from cache {cache}") and logged[1].startswith("data: val from cache")
    assert isinstance(second.train_data.examples, ExampleTable)
    assert list(second.train_data.examples) == list(first.train_data.examples)


def test_cache_equals_fresh_preparation(data_files, tmp_path):
    fresh = _data(data_files, tmp_path / "unused", cache=False)
    _data(data_files, tmp_path / "cache")  # a miss: prepares and writes
    cached = _data(data_files, tmp_path / "cache")  # a hit
    for split in ("train", "val"):
        mine, theirs = getattr(fresh, f"{split}_data"), getattr(cached, f"{split}_data")
        expected, got = list(mine.examples), list(theirs.examples)
        assert len(got) == len(expected) > 0
        for a, b in zip(expected, got, strict=True):  # every key, every value, same order
            assert list(a) == list(b) and a == b
        assert list(theirs.records) == list(mine.records)
        assert theirs.reports == mine.reports
        assert theirs.digests() == mine.digests()
    assert cached.data_card() == fresh.data_card()
    assert data_summary(cached) == data_summary(fresh)  # run.json's digests, the stored one for the whole split
    view = cached.train_data.examples[1::3]
    assert examples_digest(view) == examples_digest(fresh.train_data.examples[1::3])  # from the Arrow buffers
    assert cached.make_train_sampler(2, 1).plan() == fresh.make_train_sampler(2, 1).plan()
    assert list(column(cached.train_data.examples, "length")) == list(column(fresh.train_data.examples, "length"))
    sliced = cached.train_data.examples[3:20:4]
    assert list(sliced) == list(fresh.train_data.examples[3:20:4])
    assert [example["index"] for example in sliced] == [3, 7, 11, 15, 19]  # views keep each example's index


def test_prompt_examples_round_trip(tmp_path):
    """Task prompt keeps messages and reward fields (JSON columns) and a source of chat records."""
    sources = [
        DataSource(str(ARITHMETIC / "train.jsonl"), name="arith"),
        DataSource(str(ARITHMETIC / "sft_val.jsonl"), name="chat"),
    ]
    settings = dict(tokenizer=str(TINY_MODEL), task="prompt", max_length=64, cache_dir=str(tmp_path), batch_size=4)
    fresh = AlignDataModule(sources, cache=False, **settings)
    fresh.setup()
    for _ in range(2):
        cached = AlignDataModule(sources, **settings)
        cached.setup()
        assert list(cached.train_data.examples) == list(fresh.train_data.examples)
        assert list(cached.train_data.records) == list(fresh.train_data.records)


@pytest.mark.parametrize("change", ["one_byte", "max_length", "chat_template"])
def test_changed_input_is_a_miss(change, data_files, tmp_path, tokenized):
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY_MODEL / name, tokenizer / name)
    cache = tmp_path / "cache"
    before = _data(data_files, cache, tokenizer)
    kwargs = {}
    if change == "one_byte":  # a letter of the first chosen answer: the same size and rows, one byte different
        raw = bytearray(data_files["hh"].read_bytes())
        at = raw.rindex(b"Assistant: ", 0, raw.index(b'"rejected"')) + len("Assistant: ")
        raw[at] = ord("Q") if raw[at] != ord("Q") else ord("R")
        data_files["hh"].write_bytes(bytes(raw))
    elif change == "max_length":
        kwargs["max_length"] = 511
    else:  # a Jinja comment: the rendered text is the same, the template is not
        path = tokenizer / "chat_template.jinja"
        path.write_text("{# v2 #}" + path.read_text(encoding="utf-8"), encoding="utf-8")
    tokenized.clear()
    after = _data(data_files, cache, tokenizer, **kwargs)
    assert len(tokenized) > 0
    assert len(_entries(cache)) == 4  # new train and val entries beside the old ones
    if change == "chat_template":
        assert list(after.train_data.examples) == list(before.train_data.examples)


def test_weight_does_not_change_the_key(data_files, tmp_path, tokenized):
    """The sampling weight is read by the sampler only: the same prepared data serves any weight."""
    _data(data_files, tmp_path)
    tokenized.clear()
    _data(data_files, tmp_path, target_zh_share=None, batch_size=2)
    assert tokenized == []


def test_cache_false_writes_nothing(data_files, tmp_path):
    data = _data(data_files, tmp_path / "cache", cache=False)
    assert not (tmp_path / "cache").exists()
    examples = data.train_data.examples
    assert examples.dataset.cache_files == [] and examples[2]["index"] == 2  # Arrow held in memory, no file


@pytest.mark.parametrize("damage", ["truncated_arrow", "no_meta", "other_version"])
def test_damaged_cache_is_ignored_and_rebuilt(damage, data_files, tmp_path, tokenized, caplog):
    cache = tmp_path / "cache"
    before = _data(data_files, cache)
    expected = list(before.train_data.examples)
    train = next(
        cache / name for name in _entries(cache) if (cache / name / "meta.json").read_text().count('"hh_val"') == 0
    )
    if damage == "truncated_arrow":
        arrow = train / "examples.arrow"
        arrow.write_bytes(arrow.read_bytes()[:-100])
    elif damage == "no_meta":  # as a run killed before the rename would leave it, had it written in place
        (train / "meta.json").unlink()
    else:
        meta = train / "meta.json"
        meta.write_text(meta.read_text().replace(f'"version": {DATA_CACHE_VERSION}', '"version": 0'))
    tokenized.clear()
    with caplog.at_level(logging.WARNING, logger="lit_align.data.cache"):
        rebuilt = _data(data_files, cache)
    assert "incomplete or corrupt" in caplog.text
    assert len(tokenized) == _tokenized(before.train_data)  # the training split again; its val entry is intact
    assert list(rebuilt.train_data.examples) == expected
    tokenized.clear()
    _data(data_files, cache)
    assert tokenized == []  # and the rebuilt entry is a hit


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LIT_ALIGN_CACHE", str(tmp_path / "lit"))
    assert default_cache_dir() == tmp_path / "lit" / "data"
    monkeypatch.delenv("LIT_ALIGN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lit_align" / "data"


def test_table_keeps_types_missing_keys_and_none():
    examples = [
        {"input_ids": [1, 2, 3], "row": 4, "lang": "en", "fields": {"a": [1, 2]}, "maybe": 1.5},
        {"input_ids": [], "row": None, "lang": "zh", "fields": {"b": None}},
    ]
    table, kinds = encode_examples(examples)
    assert dict(kinds) == {"input_ids": "ids", "row": "int", "lang": "str", "fields": "json", "maybe": "json"}
    from datasets import Dataset
    from datasets.table import InMemoryTable

    view = ExampleTable(Dataset(InMemoryTable(table)), kinds)
    assert list(view) == examples
    assert view.with_split("val")[1] == {**examples[1], "index": 1, "split": "val"}
    assert column(view, "lang") == ["en", "zh"]


def test_a_change_to_the_data_code_is_a_miss(tmp_path, monkeypatch):
    """The key covers the data package's source, so an upgrade that changes preparation never meets a stale copy."""
    import lit_align.data.cache as cache

    package = Path(cache.__file__).parent
    copy = tmp_path / "data"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert cache.code_digest(copy) == cache.code_digest(package) == cache.data_code_digest()
    with open(copy / "clean.py", "a", encoding="utf-8") as file:
        file.write("\n# one more line\n")
    assert cache.code_digest(copy) != cache.data_code_digest()
    settings, tokenizer = PrepareSettings(), load_tokenizer(str(TINY_MODEL))
    sources = [DataSource(str(HH))]
    before = cache.cache_key(sources, settings, tokenizer)
    monkeypatch.setattr(cache, "data_code_digest", lambda: cache.code_digest(copy))
    assert cache.cache_key(sources, settings, tokenizer) != before
