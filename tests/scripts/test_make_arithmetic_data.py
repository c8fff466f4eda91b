"""scripts/make_arithmetic_data.py writes the arithmetic task of the RL quickstarts, and the shipped files are
exactly what it writes with its defaults."""

import importlib.util
import json
import re

import pytest

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("make_arithmetic_data", ROOT / "scripts" / "make_arithmetic_data.py")
make_arithmetic_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_arithmetic_data)

FILES = ("train.jsonl", "val.jsonl", "sft_train.jsonl", "sft_val.jsonl")
QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


def _read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _operands(question: str) -> tuple[int, int]:
    match = QUESTION.fullmatch(question)
    assert match, question
    return int(match[1]), int(match[2])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("arithmetic")
    make_arithmetic_data.main(["--out", str(out)])
    return out


def test_every_sum_once_split_872_to_128(written):
    """100 × 10 sums ``a + b`` (``a < 100``, ``b < 10``): 128 held out, the other 872 for training."""
    train, val = _read(written / "train.jsonl"), _read(written / "val.jsonl")
    assert (len(train), len(val)) == (872, 128)
    train_sums = {_operands(row["prompt"]) for row in train}
    val_sums = {_operands(row["prompt"]) for row in val}
    assert len(train_sums) == 872 and len(val_sums) == 128, "no sum repeats within a split"
    assert not train_sums & val_sums, "held-out sums are absent from training"
    assert train_sums | val_sums == {(a, b) for a in range(100) for b in range(10)}


def test_every_ground_truth_is_the_sum(written):
    for name in ("train.jsonl", "val.jsonl"):
        for row in _read(written / name):
            a, b = _operands(row["prompt"])
            assert set(row) == {"prompt", "ground_truth"} and row["ground_truth"] == str(a + b)


def test_sft_files_are_the_same_sums_answered(written):
    """``sft_<split>`` row ``i`` asks the question of ``<split>`` row ``i`` and answers ``a plus b equals a + b.``"""
    for split in ("train", "val"):
        prompts, chats = _read(written / f"{split}.jsonl"), _read(written / f"sft_{split}.jsonl")
        assert len(chats) == len(prompts)
        for prompt, chat in zip(prompts, chats, strict=True):
            user, assistant = chat["messages"]
            a, b = _operands(user["content"])
            assert (user["role"], assistant["role"]) == ("user", "assistant")
            assert user["content"] == prompt["prompt"]
            assert assistant["content"] == f"{a} plus {b} equals {a + b}."


def test_deterministic_and_seeded(written, tmp_path):
    make_arithmetic_data.main(["--out", str(tmp_path / "again")])
    make_arithmetic_data.main(["--out", str(tmp_path / "seed1"), "--seed", "1"])
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (written / name).read_bytes()
    assert (tmp_path / "seed1" / "val.jsonl").read_bytes() != (written / "val.jsonl").read_bytes()


def test_val_size_option(tmp_path):
    make_arithmetic_data.main(["--out", str(tmp_path), "--val", "10"])
    assert (len(_read(tmp_path / "train.jsonl")), len(_read(tmp_path / "val.jsonl"))) == (990, 10)


def test_shipped_files_equal_a_fresh_run_with_the_defaults(written):
    """``assets/arithmetic`` is regenerated, not edited by hand: the script's defaults reproduce it byte for byte."""
    shipped = ROOT / "assets" / "arithmetic"
    for name in FILES:
        assert (shipped / name).read_bytes() == (written / name).read_bytes(), f"assets/arithmetic/{name} differs"
