"""``lit_align eval`` as a user runs it: the files it writes, the dry run, and the settings it refuses."""

import csv
import json

import pytest

from lit_align.cli import main

from ..conftest import ROOT, TINY_MODEL

QUICK = ["--model.path", str(TINY_MODEL), "--model.device", "cpu", "--tasks", "[demo_choice]", "--limit", "6"]


def test_writes_results_json_csv_and_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    main(["eval", *QUICK, "--batch_size", "3", "--log_samples", "true", "--output_dir", str(out)])
    whole = json.loads((out / "results.json").read_text())
    manifest = whole["lit_align"]
    assert manifest["name"] == "tiny-chat" and manifest["global_step"] is None
    assert manifest["config"]["batch_size"] == 3 and manifest["config"]["tasks"] == ["demo_choice"]
    assert set(manifest["versions"]) == {"lit_align", "lm_eval", "transformers", "torch", "peft"}
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["metric"], r["filter"], r["n"]) for r in rows] == [
        ("demo_choice", "acc", "none", "6"),
        ("demo_choice", "acc_norm", "none", "6"),
    ]
    assert float(rows[0]["value"]) == whole["results"]["demo_choice"]["acc,none"]
    samples = [json.loads(line) for line in (out / "samples_demo_choice.jsonl").read_text().splitlines()]
    assert len(samples) == 6
    assert float(rows[0]["value"]) == sum(s["acc"] for s in samples) / 6  # the score is the samples' mean
    printed = capsys.readouterr().out
    assert "| demo_choice | acc | none |" in printed and f"to {out}" in printed


def test_with_the_chat_template_the_prompt_starts_with_the_template(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["eval", *QUICK, "--apply_chat_template", "true", "--log_samples", "true", "--output_dir", str(tmp_path)])
    first = json.loads((tmp_path / "samples_demo_choice.jsonl").read_text().splitlines()[0])
    prompt = first["arguments"][0][0]
    assert prompt.startswith("<|im_start|>user\n7 × 7 等于几？<|im_end|>\n<|im_start|>assistant\n")


def test_dry_run_prints_the_plan_and_loads_no_model(tmp_path, monkeypatch, capsys):
    import lit_align.evaluation.harness as harness
    import lit_align.evaluation.model as model

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not load or evaluate")

    monkeypatch.setattr(model, "load_for_eval", refuse)
    monkeypatch.setattr(harness, "run_harness", refuse)
    monkeypatch.chdir(ROOT)
    args = ["--tasks", "[demo_choice, gsm8k_chat]", "--apply_chat_template", "true", "--output_dir", str(tmp_path)]
    main(["eval", *QUICK[:4], *args, "--system_instruction", "Be brief.", "--dry_run", "true"])
    printed = capsys.readouterr().out
    assert "tasks: demo_choice, gsm8k_chat" in printed
    assert "== demo_choice: 0-shot, 200 examples ==" in printed
    assert "== gsm8k_chat: 0-shot, 1319 examples ==" in printed
    assert "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n7 × 7 等于几？<|im_end|>" in printed
    assert "<|im_start|>user\nJanet’s ducks lay 16 eggs per day." in printed
    assert printed.rstrip().endswith("dry run: nothing was evaluated")
    assert not any(tmp_path.iterdir())


def test_batch_size_auto_is_refused_with_the_reason(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", *QUICK, "--batch_size", "auto"])
    assert exit_.value.code == 2
    assert "batch_size" in capsys.readouterr().err


def test_an_output_dir_with_files_is_not_written_over(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        main(["eval", *QUICK, "--output_dir", str(tmp_path)])
    assert exit_.value.code == 1
    assert "already holds files" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"
