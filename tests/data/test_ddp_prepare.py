"""Under DDP the data is prepared once per node: two gloo ranks on CPU, one `lit_align fit`, one preparation.

`AlignDataModule.prepare_data` runs on local rank 0 while rank 1 waits; both ranks' `setup` then read the cached
copy. Every preparation logs ``data: <split> prepared and cached in`` on the rank that made it (with ``[rank: N]``),
so the run's output counts them; `RecordData` writes what each rank trained on, to compare the ranks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch import Callback

import lit_align.data.parallel as parallel
import lit_align.data.splits as splits
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.run_record import data_summary

from ..conftest import ROOT, SHARED_DATA, TINY_MODEL

HH = SHARED_DATA / "hh_rlhf_harmless_base.test.jsonl"


class RecordData(Callback):
    """Test use only: writes ``rank<N>.json``, the run.json data digests of this rank's data module at train start."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_start(self, trainer, pl_module) -> None:
        summary = data_summary(trainer.datamodule)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(summary), encoding="utf-8")


def _fit_ddp(tmp_path: Path, *overrides: str) -> str:
    """Two steps of the DPO quickstart on two CPU ranks (gloo); returns everything the ranks printed."""
    record = {"class_path": f"{__name__}.RecordData", "init_args": {"folder": str(tmp_path)}}
    command = [
        sys.executable, "-m", "lit_align", "fit",
        "--config", str(ROOT / "configs/quickstart/dpo.yaml"),
        "--config", str(ROOT / "configs/strategy/ddp.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--data.max_val_examples=8",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        f"--trainer.callbacks+={json.dumps(record)}",
        *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


@pytest.mark.slow
def test_two_ranks_prepare_once_and_train_on_the_same_data(tmp_path):
    cache = tmp_path / "cache"
    output = _fit_ddp(tmp_path, f"--data.cache_dir={cache}")

    prepared = [line for line in output.splitlines() if "prepared and cached in" in line]
    assert len(prepared) == 2, output[-6000:]  # train, then val, each once
    assert all(line.startswith("[rank: 0] data: ") for line in prepared), prepared
    assert [line.split("data: ")[1].split()[0] for line in prepared] == ["train", "val"]
    assert "data: train from cache" in output  # setup, after prepare_data, read the copy

    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2  # one train and one val entry
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["train"]["examples"] > 0
    assert not any(".tmp" in p.name for p in cache.iterdir())  # no half-written copy left


@pytest.mark.slow
def test_without_the_cache_each_rank_prepares_and_is_warned(tmp_path):
    output = _fit_ddp(tmp_path, "--data.cache=false")
    assert "each of the 2 ranks reads and tokenises the data in full" in output
    assert output.count("each of the 2 ranks") == 1  # rank zero only
    assert "prepared and cached in" not in output
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0] == ranks[1]


# ---- the same, in process and without a Trainer (fast) ----------------------------------------------------------


@pytest.fixture
def hh_module(tmp_path):
    """A preference data module over HH-RLHF pairs 0-29 (train) and 25-39 (val: 5 also in train), caching under
    tmp_path."""
    lines = HH.read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "train.jsonl").write_text("".join(lines[:30]), encoding="utf-8")
    (tmp_path / "val.jsonl").write_text("".join(lines[25:40]), encoding="utf-8")

    def make(**kwargs) -> AlignDataModule:
        return AlignDataModule(
            [DataSource(str(tmp_path / "train.jsonl"))],
            val=str(tmp_path / "val.jsonl"),
            tokenizer=str(TINY_MODEL),
            task="preference",
            max_length=1024,
            max_truncated_fraction=1.0,
            cache_dir=str(tmp_path / "cache"),
            **kwargs,
        )

    return make


@pytest.fixture
def tokenized(monkeypatch) -> list[int]:
    """One element per call of the per-record tokenisation."""
    calls, real = [], parallel.tokenize_record

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(parallel, "tokenize_record", counting)
    return calls


@pytest.mark.skipif(not HH.is_file(), reason="needs ../shared/data")
def test_prepare_data_fills_the_cache_and_setup_only_reads_it(hh_module, tokenized, tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr(splits, "_info_on_this_rank", lambda message, *world: lines.append((message, *world)))
    data = hh_module()
    data.prepare_data()
    assert len(tokenized) == 45  # 30 train + 15 val pairs, tokenised once each
    assert [(message.split(" prepared and cached in ")[0], *world) for message, *world in lines] == [
        ("data: train", 1, 0),  # one process: world size 1, rank 0 (the line has no rank prefix)
        ("data: val", 1, 0),
    ]
    assert data.train_data is None and data.val_data is None and data.tokenizer is None  # nothing kept on self
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2

    tokenized.clear()
    data.setup()
    assert tokenized == [] and len(lines) == 2  # both splits were hits
    assert (len(data.train_data.examples), len(data.val_data.examples)) == (30, 15)
    data.prepare_data()  # set up already (by hand): nothing to do
    assert tokenized == []


@pytest.mark.skipif(not HH.is_file(), reason="needs ../shared/data")
def test_prepare_data_then_setup_equals_setup_alone(hh_module, tmp_path):
    """The val entry that prepare_data makes (with the stored train digests) is the one setup would make: the 5
    validation pairs that are also training pairs are dropped in both."""
    first = hh_module(val_in_train="drop")
    first.prepare_data()
    first.setup()
    alone = hh_module(val_in_train="drop", cache=False)
    alone.setup()
    assert len(first.val_data.examples) == 10
    assert data_summary(first) == data_summary(alone)


@pytest.mark.skipif(not HH.is_file(), reason="needs ../shared/data")
def test_without_the_cache_prepare_data_warns_under_ddp_only(hh_module, tokenized, monkeypatch):
    warned = []
    monkeypatch.setattr(splits, "rank_zero_warn", warned.append)
    data = hh_module(cache=False)
    data.prepare_data()  # no trainer: one process
    assert warned == [] and tokenized == []
    data.trainer = SimpleNamespace(world_size=4)
    data.prepare_data()
    assert len(warned) == 1 and "each of the 4 ranks" in warned[0] and "data.cache: true" in warned[0]
    assert tokenized == []  # setup prepares, on every rank
