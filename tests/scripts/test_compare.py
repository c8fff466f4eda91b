"""scripts/compare.py trains through `lit_align fit` and writes the table and the plot."""

import importlib.util

import pytest

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("compare", ROOT / "scripts" / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


@pytest.mark.slow
def test_compare_writes_table_and_plot(tmp_path):
    compare.main(["--only", "DPO", "--steps", "4", "--val-every", "4", "--output", str(tmp_path / "compare")])
    table = (tmp_path / "compare" / "comparison.md").read_text(encoding="utf-8")
    row = next(line for line in table.splitlines() if line.startswith("| DPO |"))
    accuracy = float(row.split("|")[3])
    assert 0.0 <= accuracy <= 1.0
    png = (tmp_path / "compare" / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
