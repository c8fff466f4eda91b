"""The numbers lit_align's lm-eval path gives are lm-eval's: equal to its command line on the same directory, to the
merged model for an unmerged adapter, and to themselves at another batch size."""

import json
import subprocess
import sys

import pytest
import torch

from lit_align.evaluation import HarnessSettings, run_harness
from lit_align.evaluation.tasks import PROJECT_TASKS

from ..conftest import ROOT, TINY_MODEL


def _loglikelihoods(results, task="demo_choice"):
    """Each sample's (chosen, rejected) log-likelihoods, in document order (lm-eval's files hold them as text)."""
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return torch.tensor([[float(resp[0][0]) for resp in s["resps"]] for s in samples], dtype=torch.float64)


def _settings(**overrides):
    return HarnessSettings(**{"tasks": ["demo_choice"], "limit": 12, "batch_size": 4, "log_samples": True, **overrides})


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(
        TINY_MODEL
    )


def test_batch_size_does_not_change_the_scores(tiny, monkeypatch):
    monkeypatch.chdir(ROOT)
    one, eight = (run_harness(*tiny, _settings(batch_size=b)) for b in (1, 8))
    assert one["results"]["demo_choice"]["acc,none"] == eight["results"]["demo_choice"]["acc,none"]
    torch.testing.assert_close(_loglikelihoods(one), _loglikelihoods(eight), atol=1e-5, rtol=0)


def test_an_adapter_in_memory_equals_the_same_adapter_merged_and_saved(tiny, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(ROOT)
    model, tokenizer = tiny
    torch.manual_seed(0)
    # init_lora_weights=False draws B at random too: an adapter that changes the outputs, as a trained one does.
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    # float64: what is compared is the adapter's arithmetic, not float32's rounding of sums of ~100 nats.
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float64), config).eval()
    unmerged = _loglikelihoods(run_harness(adapted, tokenizer, _settings()))
    adapted.merge_and_unload().save_pretrained(tmp_path / "merged")
    merged_model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float64).eval()
    merged = _loglikelihoods(run_harness(merged_model, tokenizer, _settings()))
    base = _loglikelihoods(run_harness(model, tokenizer, _settings()))
    assert (unmerged - base).abs().max() > 0.1  # the adapter matters ...
    torch.testing.assert_close(unmerged, merged, atol=1e-5, rtol=0)  # ... and is the same unmerged or merged


@pytest.mark.slow
def test_equal_to_the_lm_eval_command_line(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ours = run_harness(*tiny, _settings(apply_chat_template=True))
    command = [
        *(sys.executable, "-m", "lm_eval", "run", "--model", "hf"),
        *("--model_args", f"pretrained={TINY_MODEL},dtype=float32", "--device", "cpu"),
        *("--tasks", "demo_choice", "--include_path", str(PROJECT_TASKS), "--limit", "12", "--batch_size", "4"),
        *("--seed", "1234", "--apply_chat_template", "--log_samples", "--output_path", str(tmp_path)),
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, timeout=300)
    (results_file,) = tmp_path.rglob("results_*.json")
    (samples_file,) = tmp_path.rglob("samples_demo_choice_*.jsonl")
    theirs = json.loads(results_file.read_text())
    for metric in ("acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none"):
        assert ours["results"]["demo_choice"][metric] == theirs["results"]["demo_choice"][metric], metric
    their_samples = {"demo_choice": [json.loads(line) for line in samples_file.read_text().splitlines()]}
    torch.testing.assert_close(_loglikelihoods(ours), _loglikelihoods({"samples": their_samples}), atol=0, rtol=0)
