"""scripts/eval_math.py on the tiny chat model: files, counts, and numbers that agree with the per-sample flags."""

import importlib.util
import json

import pytest

from lit_align.rewards import pass_at_k

from ..conftest import ROOT, SHARED_DATA, TINY_MODEL

spec = importlib.util.spec_from_file_location("eval_math", ROOT / "scripts" / "eval_math.py")
eval_math = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eval_math)

GSM8K_TEST = SHARED_DATA / "gsm8k.test.jsonl"


def _run(output, *extra):
    argv = ["--model", str(TINY_MODEL), "--data", str(GSM8K_TEST), "--limit", "3", "--max_new_tokens", "8"]
    return eval_math.main([*argv, "--device", "cpu", "--output", str(output), *extra])


def _rows(output):
    return [json.loads(line) for line in (output / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def test_greedy_run_writes_one_line_per_question(tmp_path):
    summary = _run(tmp_path / "greedy", "--batch_size", "2")
    rows = _rows(tmp_path / "greedy")
    assert len(rows) == 3 and summary["n"] == 3
    assert rows[0]["ground_truth"] == "18" and rows[2]["ground_truth"] == "70000"  # the first gsm8k records
    assert rows[0]["question"].startswith("Janet\u2019s ducks lay 16 eggs")
    for row in rows:
        assert len(row["completions"]) == len(row["answers"]) == len(row["correct"]) == 1
    flags = [flag for row in rows for flag in row["correct"]]
    assert summary["accuracy"] == pytest.approx(sum(flags) / len(flags))
    assert summary["pass@1"] == pytest.approx(summary["accuracy"])  # greedy: one sample per question
    saved = json.loads((tmp_path / "greedy" / "summary.json").read_text(encoding="utf-8"))
    assert saved["settings"]["num_samples"] == 1 and saved["settings"]["temperature"] is None
    assert saved["accuracy"] == summary["accuracy"]


def test_sampled_run_reports_pass_at_k_from_its_flags(tmp_path):
    summary = _run(tmp_path / "sampled", "--num_samples", "3", "--seed", "1")
    rows = _rows(tmp_path / "sampled")
    assert len(rows) == 3 and all(len(row["completions"]) == 3 for row in rows)
    counts = [sum(row["correct"]) for row in rows]
    assert summary["accuracy"] == pytest.approx(sum(counts) / 9)
    assert summary["pass@1"] == pytest.approx(summary["accuracy"])  # pass@1 is c/n per question
    assert summary["pass@3"] == pytest.approx(sum(pass_at_k(3, c, 3) for c in counts) / 3)
    assert summary["pass@3"] >= summary["pass@1"]


def test_correct_answers_score_as_correct():
    records = [{"question": "q", "answer": "work\n#### 1,234"}, {"question": "q", "answer": "#### 5"}]
    completions = [["The answer is $1,234.", "#### 1234", "no idea"], ["6", "7", "8"]]
    rows, summary = eval_math.score(records, completions, k=2)
    assert [row["correct"] for row in rows] == [[True, True, False], [False, False, False]]
    assert summary["accuracy"] == pytest.approx(2 / 6)
    assert summary["pass@2"] == pytest.approx((1 + 0) / 2)  # 1 wrong of 3: every pair holds a right one


def test_refuses_existing_output_and_bad_records(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "summary.json").write_text("{}")
    with pytest.raises(SystemExit, match="--overwrite"):
        _run(tmp_path / "taken")
    with pytest.raises(SystemExit, match="--model: no such directory"):
        eval_math.main(["--model", str(tmp_path / "missing"), "--data", str(GSM8K_TEST), "--output", str(tmp_path)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q"}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: field 'answer'"):
        eval_math.read_questions(bad, None)


def test_lora_adapter_directory_loads_with_its_base_model(tmp_path):
    """A LoRA export (adapter_config.json, here without a tokenizer) is scored on top of the model it names."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    model, tokenizer = eval_math.load_model(str(tmp_path / "adapter"), "cpu", "float32")
    assert hasattr(model, "peft_config") and tokenizer.eos_token == "<|im_end|>"
    argv = ["--model", str(tmp_path / "adapter"), "--data", str(GSM8K_TEST), "--limit", "1", "--max_new_tokens", "2"]
    summary = eval_math.main([*argv, "--device", "cpu", "--output", str(tmp_path / "out")])
    assert summary["n"] == 1 and len(_rows(tmp_path / "out")) == 1
