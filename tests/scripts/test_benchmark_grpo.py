"""scripts/benchmark_grpo.py: lit_align's GRPO loss equals TRL's on the same tokens, ratios pair rounds, and a
throughput run of lit_align alone writes its table."""

import importlib.util
import json
import sys

import pytest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # benchmark_grpo.py imports measure.py and friends beside it
spec = importlib.util.spec_from_file_location("benchmark_grpo", ROOT / "scripts" / "benchmark_grpo.py")
benchmark_grpo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark_grpo)

ARITH_MODEL = ROOT / "assets" / "tiny-arith"


def test_loss_and_gradients_match_trl_for_every_loss_type():
    pytest.importorskip("trl")
    rows = benchmark_grpo.check_loss(str(ARITH_MODEL))
    cases = {(row["loss_type"], row["beta"], row["use_bias_correction_kl"], row["temperature"]) for row in rows}
    every_type = {(t, b, True, 1.0) for t in ("grpo", "bnpo", "dr_grpo", "dapo") for b in (0.0, 0.04)}
    assert cases >= every_type | {("dapo", 0.04, False, 1.0), ("dapo", 0.04, True, 0.7)}
    for row in rows:
        assert abs(row["lit_align_loss"]) > 1e-2, row  # not a trivially zero loss
        assert row["loss_abs_diff"] < 1e-6, row
        assert row["grad_max_abs_diff"] < 1e-5 * max(1.0, row["grad_max_abs"]), row
        assert 0 < row["clipped_fraction"] < 1, row  # the ratio is off 1 and the clip is exercised


def _run(system: str, round_index: int, seconds: float) -> dict:
    return {
        "system": system,
        "round": round_index,
        "seconds_per_step": seconds,
        "generation_seconds_per_step": seconds / 2,
        "completion_tokens_per_second": 1000 / seconds,
        "rss_peak_delta_mb": 100.0,
        "other_cpu_cores": 0.1 * round_index,
    }


def test_ratios_to_trl_are_medians_of_per_round_ratios():
    """lit_align 1, 4, 3 s/step against TRL's 2, 2, 6: per-round ratios 0.5, 2, 0.5, median 0.5 (the ratio of
    medians would be 3 / 2 = 1.5). tokens/s are 1000 / s, so their ratios are 2, 0.5, 2: median 2."""
    runs = [_run("lit_align", r, s) for r, s in enumerate((1.0, 4.0, 3.0))]
    runs += [_run("trl", r, s) for r, s in enumerate((2.0, 2.0, 6.0))]
    lit_align, trl = benchmark_grpo.summarise(runs, ["lit_align", "trl"])
    assert lit_align["seconds_per_step"] == 3.0 and trl["seconds_per_step"] == 2.0
    assert lit_align["vs_trl_seconds_per_step"] == pytest.approx(0.5)
    assert lit_align["vs_trl_completion_tokens_per_second"] == pytest.approx(2.0)
    assert lit_align["vs_trl_rss_peak_delta_mb"] == pytest.approx(1.0)
    assert lit_align["other_cpu_cores_max"] == pytest.approx(0.2) and "vs_trl_seconds_per_step" not in trl


def test_a_skipped_trl_leaves_no_ratio():
    runs = [_run("lit_align", 0, 1.0), {"system": "trl", "round": 0, "skipped": "pip install '.[bench]'"}]
    rows = benchmark_grpo.summarise(runs, ["lit_align", "trl"])
    assert rows[0]["vs_trl_seconds_per_step"] is None
    assert rows[1] == {"system": "trl", "skipped": "pip install '.[bench]'"}
    settings = {"model": "m", "data": "d.jsonl", "prompts_per_step": 2, "num_generations": 2}
    settings.update(max_completion_length=4, temperature=1.0, warmup=0, steps=1, rounds=1, threads=1)
    table = benchmark_grpo.render(rows, settings)
    assert "| lit_align | 1.00 | 0.50 | 1000 | 100 | - | - | - | 0.00 |" in table
    assert "| trl | skipped: pip install '.[bench]' |" in table


def test_one_step_of_lit_align_alone_writes_the_table(tmp_path):
    out = tmp_path / "out"
    argv = ["--rounds", "1", "--steps", "1", "--warmup", "0", "--systems", "lit_align", "--prompts-per-step", "2"]
    argv += ["--num-generations", "2", "--max-completion-length", "4", "--output", str(out)]
    benchmark_grpo.main(argv)
    report = json.loads((out / "benchmark_grpo.json").read_text())
    (row,) = report["summary"]
    assert row["system"] == "lit_align" and row["rounds"] == 1
    assert 0 < row["generation_seconds_per_step"] < row["seconds_per_step"]
    (run,) = report["runs"]
    assert run["timed_steps"] == 1 and 4 <= run["completion_tokens"] <= 2 * 2 * 4  # 4 completions of 1 to 4 tokens
    assert row["completion_tokens_per_second"] == pytest.approx(run["completion_tokens"] / run["seconds"])
    table = (out / "benchmark_grpo.md").read_text()
    assert "| system | s/step | of it generate, s | completion tokens/s |" in table and "| lit_align |" in table
    with pytest.raises(SystemExit, match="--overwrite"):
        benchmark_grpo.main(argv)  # never over an earlier run's results
