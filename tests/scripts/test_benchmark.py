"""scripts/benchmark.py: systems run in subprocesses, one summary row each; ratios are medians of per-round ratios."""

import importlib.util
import json
import sys

import pytest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # benchmark.py imports measure.py and benchmark_systems.py beside it
spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_median_of_per_round_ratios():
    """Rounds 0, 1, 2: 100/50 = 2, 90/90 = 1, 300/100 = 3, median 2. The ratio of medians would be 100/90 = 1.11,
    pairing round 0's numerator with round 1's denominator. Round 3 ran only the numerator and does not count."""
    numerators = {0: 100.0, 1: 90.0, 2: 300.0, 3: 1000.0}
    denominators = {0: 50.0, 1: 90.0, 2: 100.0}
    assert benchmark.median_of_ratios(numerators, denominators) == pytest.approx(2.0)
    assert benchmark.median_of_ratios({0: 1.0, 1: 3.0}, {0: 1.0, 1: 1.0}) == pytest.approx(2.0)  # even count: mean
    assert benchmark.median_of_ratios(numerators, {}) is None


def test_summary_ratios_pair_rounds():
    runs = [
        {"system": "lit_align-padded", "round": 0, "tokens_per_second": 200.0},
        {"system": "lit_align-padded", "round": 1, "tokens_per_second": 100.0},
        {"system": "bare", "round": 0, "tokens_per_second": 100.0},
        {"system": "bare", "round": 1, "tokens_per_second": 100.0},
        {"system": "trl", "skipped": "pip install '.[bench]'"},
    ]
    for run in runs:
        run.update(padding_fraction=0.1, rss_peak_delta_mb=10.0, train_in_use_delta_mb=5.0, other_cpu_cores=0.0)
    rows, precomputed_over_sft = benchmark.summarise(runs, ["lit_align-padded", "trl", "bare"])
    assert rows[0]["vs_bare"] == pytest.approx(1.5) and rows[0]["vs_trl"] is None  # (2 + 1) / 2
    assert rows[1] == {"system": "trl", "skipped": "pip install '.[bench]'"} and precomputed_over_sft is None
    assert "| trl | skipped: pip install '.[bench]' |" in benchmark.render(rows, None, _settings(), None)


def _settings() -> dict:
    sizes = {"batch_size": 2, "max_length": 64, "warmup": 0, "steps": 1, "rounds": 2, "threads": 2}
    return {"model": "m", "data": "d.jsonl", **sizes}


@pytest.mark.slow
def test_one_round_of_two_systems(tmp_path):
    argv = ["--rounds", "1", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--max-length", "64"]
    argv += ["--pairs", "40", "--systems", "lit_align-padded", "bare", "--output", str(tmp_path / "out")]
    benchmark.main(argv)
    report = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert [row["system"] for row in report["summary"]] == ["lit_align-padded", "bare"]
    for row in report["summary"]:
        assert row["tokens_per_second"] > 0 and 0 <= row["padding_fraction"] < 1
    assert report["summary"][0]["vs_bare"] > 0
    markdown = (tmp_path / "out" / "benchmark.md").read_text()
    assert "| system | tokens/s | padding | RSS peak Δ MB |" in markdown
