"""``data.num_proc``: worker processes clean and tokenise, and nothing about the result depends on how many.

Every test lowers `MIN_RECORDS_PER_PROCESS` so that a few hundred records really go to workers, and checks that they
did (each worker chunk leaves a file named after its process id)."""

import json
import os

import pytest

import lit_align.data.parallel as parallel
from lit_align.checks import ConfigError
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.errors import DataFormatError
from lit_align.data.prepare import PrepareSettings, prepare_sources
from lit_align.tokenizer import load_tokenizer
from tests.conftest import SHARED_DATA, TINY_MODEL

HH = SHARED_DATA / "hh_rlhf_harmless_base.test.jsonl"
ZH = SHARED_DATA / "llamafactory_oaast_rm_zh.train.jsonl"


@pytest.fixture
def worker_pids(monkeypatch, tmp_path) -> set[int]:
    """Lets 10 records per process go to workers; ``read()`` gives (after preparing) the ids of the other processes
    that prepared records. Workers are forked, so they inherit these patches."""
    monkeypatch.setattr(parallel, "MIN_RECORDS_PER_PROCESS", 10)
    marks = tmp_path / "pids"
    marks.mkdir()
    real = parallel._chunk

    def marking(*args):
        (marks / str(os.getpid())).touch()
        return real(*args)

    monkeypatch.setattr(parallel, "_chunk", marking)

    class Pids(set):
        def read(self) -> set[int]:
            return {int(p.name) for p in marks.iterdir()} - {os.getpid()}

    return Pids()


def _data_module(tmp_path, num_proc: int, **kwargs) -> AlignDataModule:
    """HH-RLHF (the first 400 pairs), Chinese pairs, and a source that repeats HH-RLHF's first 200 pairs (dropped as
    duplicates across sources) before its last 100; short max_length so that some pairs are cut and some dropped."""
    lines = HH.read_text(encoding="utf-8").splitlines()
    (tmp_path / "hh.jsonl").write_text("\n".join(lines[:400]) + "\n", encoding="utf-8")
    (tmp_path / "hh_again.jsonl").write_text("\n".join(lines[:200] + lines[400:]) + "\n", encoding="utf-8")
    sources = [
        DataSource(str(tmp_path / "hh.jsonl"), name="hh"),
        DataSource(str(ZH), name="zh"),
        DataSource(str(tmp_path / "hh_again.jsonl"), name="hh_again"),
    ]
    data = AlignDataModule(
        train=sources,
        val=[DataSource(str(HH), name="hh_val")],
        tokenizer=str(TINY_MODEL),
        task="preference",
        max_length=256,
        max_truncated_fraction=1.0,
        batch_size=4,
        cache=False,
        num_proc=num_proc,
        **kwargs,
    )
    data.setup()
    return data


def test_two_processes_give_the_same_examples_counts_and_card_as_one(tmp_path, worker_pids):
    one = _data_module(tmp_path, 1)
    assert worker_pids.read() == set()
    two = _data_module(tmp_path, 2)
    pids = worker_pids.read()
    assert len(pids) == 2 * 4  # two workers for each of the 4 sources
    for split in ("train", "val"):
        a, b = one.split_examples(split), two.split_examples(split)
        assert len(a) == len(b) > 0
        assert list(a) == list(b)  # same examples in the same order, index included
        assert [r.counts for r in getattr(one, f"{split}_data").reports] == [
            r.counts for r in getattr(two, f"{split}_data").reports
        ]
    hh_again = {r.name: r for r in two.train_data.reports}["hh_again"].counts
    assert hh_again["dropped/duplicate"] >= 199 and 0 < hh_again["examples"] <= 100  # de-duplicated across sources
    assert one.val_data.reports[0].counts["in_train"] > 0  # the val file is the train file: every record counted
    assert one.data_card() == two.data_card()
    assert one.train_data.digests() == two.train_data.digests()


def _prompt_file(path, bad_row: int | None = None, rows: int = 120):
    lines = []
    for i in range(rows):
        messages = [{"role": "user", "content": f"What is {i} + 1?"}, {"role": "assistant", "content": str(i + 1)}]
        if i == bad_row:
            messages = [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "1"}]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_bad_row_found_in_a_worker_names_its_file_line_and_field(tmp_path, worker_pids, num_proc):
    path = _prompt_file(tmp_path / "prompts.jsonl", bad_row=97)
    tokenizer = load_tokenizer(str(TINY_MODEL))
    with pytest.raises(DataFormatError) as raised:
        prepare_sources(
            [DataSource(str(path), format="messages")], tokenizer, PrepareSettings(task="prompt"), num_proc=num_proc
        )
    assert str(raised.value) == f"{path}:98: field 'messages': no user message to take the prompt from"
    assert len(worker_pids.read()) == (2 if num_proc == 2 else 0)
    skipped = prepare_sources(
        [DataSource(str(path), format="messages")],
        tokenizer,
        PrepareSettings(task="prompt", on_error="skip"),
        num_proc=num_proc,
    )
    assert skipped.reports[0].counts["error/messages"] == 1
    assert skipped.reports[0].counts["examples"] == 119


def test_the_first_error_is_the_one_a_single_process_meets(tmp_path, worker_pids):
    """Chat records in a preference run fail when tokenised. Rows 1-100 have an empty answer and are dropped by
    cleaning, so one process first tokenises row 101 (in the second chunk of 64) and fails there; so must two."""
    rows = []
    for i in range(150):
        answer = "" if i < 100 else f"answer {i}"
        rows.append(
            {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": answer}]}
        )
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    tokenizer = load_tokenizer(str(TINY_MODEL))
    settings = PrepareSettings(task="preference")
    messages = []
    for num_proc in (1, 2):
        with pytest.raises(ConfigError) as raised:
            prepare_sources(
                [DataSource(str(path), name="chat", format="messages")], tokenizer, settings, num_proc=num_proc
            )
        messages.append(str(raised.value))
    assert len(worker_pids.read()) == 2
    assert messages[0] == messages[1]
    assert messages[0].startswith("source 'chat' line 101 is chat (SFT) data")


def test_default_num_proc_is_the_available_cores_capped(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert parallel.default_num_proc() == parallel.MAX_DEFAULT_PROCESSES == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert parallel.default_num_proc() == 2


def test_small_sources_stay_in_one_process(monkeypatch):
    """Below 500 records per process no worker starts: 999 records with num_proc 2 run here, 1000 go to workers."""

    class Started(Exception):
        pass

    def get_context(method):
        raise Started(method)

    monkeypatch.setattr(parallel.multiprocessing, "get_context", get_context)
    tokenizer = load_tokenizer(str(TINY_MODEL))
    record = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "row": 1}
    chunks = parallel.prepared_chunks(
        [record] * 999, tokenizer, PrepareSettings(), source="s", min_zh_ratio=None, num_proc=2
    )
    assert sum(outcome.length is not None for chunk in chunks for outcome in chunk.outcomes) == 999
    with pytest.raises(Started):
        list(
            parallel.prepared_chunks(
                [record] * 1000, tokenizer, PrepareSettings(), source="s", min_zh_ratio=None, num_proc=2
            )
        )
