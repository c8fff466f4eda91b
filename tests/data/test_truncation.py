"""Truncation is counted, warned about, and an error when it hits more than ``max_truncated_fraction``."""

import json

import pytest

from lit_align.data.card import render_data_card
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.prepare import PrepareSettings
from lit_align.data.tokenize import tokenize_conversation

from ..conftest import ROOT, TINY_MODEL


def _chat(i: int, words: int) -> list[dict]:
    return [
        {"role": "user", "content": f"Question {i}?"},
        {"role": "assistant", "content": " ".join(["word"] * words)},
    ]


def _write(path, conversations) -> str:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations), encoding="utf-8")
    return str(path)


def _module(path: str, **kwargs) -> AlignDataModule:
    return AlignDataModule([DataSource(path, name="chat")], tokenizer=str(TINY_MODEL), batch_size=2, **kwargs)


def test_most_examples_truncated_is_an_error_with_share_and_longest_lengths(tmp_path, tokenizer):
    conversations = [_chat(i, words) for i, words in enumerate([5, 10, 20, 40])]
    lengths = sorted((len(tokenize_conversation(tokenizer, m).input_ids) for m in conversations), reverse=True)
    path = _write(tmp_path / "chat.jsonl", conversations)
    data = _module(path, max_length=lengths[-1] - 1)  # shorter than every example: 4 of 4 are cut
    with pytest.raises(ValueError) as err:
        data.setup()
    assert str(err.value) == (
        f"data source 'chat' ({path}): 4 of 4 examples (100.0%) are longer than max_length={lengths[-1] - 1} "
        f"tokens and were truncated, more than max_truncated_fraction=0.2; the longest are "
        f"{lengths[0]}, {lengths[1]}, {lengths[2]} tokens. Raise data.max_length (to {lengths[0]} to keep them "
        "all whole), or data.max_truncated_fraction if cutting them is intended."
    )


def test_few_truncated_is_a_warning_with_the_count_and_in_the_data_card(tmp_path, tokenizer):
    conversations = [_chat(i, 1) for i in range(9)] + [_chat(9, 40)]
    long = len(tokenize_conversation(tokenizer, conversations[-1]).input_ids)
    path = _write(tmp_path / "chat.jsonl", conversations)
    data = _module(path, max_length=long - 1)
    with pytest.warns(UserWarning, match=r"data\[train/chat\]: 1 of 10 examples \(10.0%\) were truncated to "):
        data.setup()
    report = data.train_data.reports[0]
    assert report.counts["truncated"] == 1 and report.longest_truncated == [long]
    card = render_data_card({"train": [report]}, data.bounds, {"max_truncated_fraction": 0.2})
    assert "| source | path | format | rows read | records | examples | truncated |" in card
    assert f"| chat | `{path}` | auto | 10 | 10 | 10 | 1 |" in card
    assert "- max_truncated_fraction: `0.2`" in data.data_card()


def test_max_truncated_fraction_is_checked_and_travels_in_settings():
    assert PrepareSettings(max_truncated_fraction=0.5).max_truncated_fraction == 0.5
    with pytest.raises(ValueError, match=r"max_truncated_fraction must be in \[0, 1\], got 1.5"):
        PrepareSettings(max_truncated_fraction=1.5)
    data = AlignDataModule([DataSource("x.jsonl")], tokenizer=str(TINY_MODEL), max_truncated_fraction=1.0)
    assert data.settings.max_truncated_fraction == 1.0


def test_the_command_prints_the_truncation_stop_as_one_error_line(tmp_path, monkeypatch, capsys):
    from lit_align.cli import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["fit", "--config", "configs/quickstart/sft.yaml", "--data.max_length", "16",
             f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data source 'sft_train' (assets/demo/sft_train.jsonl): 2000 of 2000 examples")
    assert "Traceback" not in err
