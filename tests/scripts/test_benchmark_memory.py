"""scripts/benchmark_memory.py runs a configuration in a subprocess and prints its row."""

import importlib.util
import math

import pytest

from ..conftest import DEMO_DATA, ROOT

spec = importlib.util.spec_from_file_location("benchmark_memory", ROOT / "scripts" / "benchmark_memory.py")
benchmark_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark_memory)


@pytest.mark.slow
def test_one_configuration_for_two_steps(tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join((DEMO_DATA / "dpo_train.jsonl").open(encoding="utf-8").readlines()[:40]), encoding="utf-8")
    argv = ["--configs", "dpo-lora-precomputed", "--steps", "2", "--warmup", "1", "--data", str(data)]
    (row,) = benchmark_memory.main(argv)
    assert row["name"] == "dpo-lora-precomputed" and not row["reference_in_memory"]
    assert row["tokens_per_second"] > 0 and math.isfinite(row["rss_peak_delta_mb"])
    assert row["train_in_use_delta_mb"] > 0
    assert "| dpo-lora-precomputed | no |" in capsys.readouterr().out
