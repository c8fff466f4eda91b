"""sweep.csv, summary.csv and summary.md from synthetic runs with values a person can check."""

import csv

import pytest

from lit_align.sweeps.collect import Metric, collect
from lit_align.sweeps.grid import parse_grid, settings
from lit_align.sweeps.plan import plan_runs
from lit_align.sweeps.report import final_cell, number, write_runs_csv, write_summary_csv, write_summary_md
from lit_align.sweeps.stats import summarize

from .synthetic import make_run_dir

METRICS = [Metric("val/loss", "min"), Metric("val/acc", "max")]


@pytest.fixture
def sweep(tmp_path):
    """beta=0.05: three finished seeds with final accuracy 0.7, 0.8, 0.9; beta=0.1: one finished, one failed."""
    axes = [parse_grid("x.beta=[0.05,0.1]")]
    the_settings = settings(axes)
    runs = plan_runs(the_settings, [1, 2, 3], tmp_path)
    for run, acc in zip(runs[:3], [0.7, 0.8, 0.9], strict=True):
        make_run_dir(run.run_dir, scalars={"val/acc": [(0, 0.5), (5, acc + 0.05), (10, acc)],
                                           "val/loss": [(0, 1.0), (10, 1.0 - acc)]})  # fmt: skip
    make_run_dir(runs[3].run_dir, scalars={"val/acc": [(10, 0.6)], "val/loss": [(10, 0.4)]})
    make_run_dir(runs[4].run_dir, status="failed")
    results, _ = collect(runs, METRICS)
    return tmp_path, axes, the_settings, results


def test_runs_csv_has_one_row_per_run(sweep):
    out, axes, _, results = sweep
    path = write_runs_csv(out / "sweep.csv", out, axes, METRICS, results)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) == 6
    assert list(rows[0])[:6] == ["setting", "beta", "seed", "status", "seconds", "run_dir"]
    assert (
        rows[0]["setting"] == "beta=0.05"
        and rows[0]["beta"] == "0.05"
        and rows[0]["run_dir"] == "runs/beta-0.05/seed-1"
    )
    assert float(rows[2]["val/acc final"]) == pytest.approx(0.9) and float(rows[2]["val/acc best"]) == pytest.approx(
        0.95
    )
    assert rows[4]["status"] == "failed" and rows[4]["val/acc final"] == "" and rows[4]["seconds"] == ""
    assert rows[5]["status"] == "not started"


def test_summary_csv_uses_finished_runs_only(sweep):
    out, axes, the_settings, results = sweep
    path = write_summary_csv(out / "summary.csv", axes, the_settings, METRICS, results)
    first, second = csv.DictReader(path.open(encoding="utf-8"))
    assert first["n"] == "3"
    assert float(first["val/acc mean"]) == pytest.approx(0.8) and float(first["val/acc std"]) == pytest.approx(0.1)
    assert float(first["val/acc ci95 low"]) == pytest.approx(0.8 - 0.24841, abs=1e-5)
    assert float(first["val/acc best mean"]) == pytest.approx(0.85)
    assert second["n"] == "1" and float(second["val/acc mean"]) == pytest.approx(0.6)
    assert second["val/acc std"] == "" and second["val/acc ci95 high"] == ""


def test_summary_md_cells_links_and_footnote(sweep):
    out, _, the_settings, results = sweep
    text = write_summary_md(out / "summary.md", "Sweep: test", ["- Seeds: 1, 2, 3."], the_settings, METRICS, results)
    text = text.read_text(encoding="utf-8")
    assert text.startswith("# Sweep: test\n\n- Seeds: 1, 2, 3.\n")
    row = next(line for line in text.splitlines() if line.startswith("| [beta=0.05]"))
    assert "(runs/beta-0.05/) | 3 |" in row
    assert "0.800 ± 0.100 [0.552, 1.048]" in row  # 0.8 ± 0.24841
    assert "| 0.850 ± 0.100 |" in row  # best accuracy: 0.75, 0.85, 0.95
    row = next(line for line in text.splitlines() if line.startswith("| [beta=0.1]"))
    assert "| 1 | 0.400 | 0.600 |" in row
    assert "- `beta-0.1/seed-2`: failed" in text and "- `beta-0.1/seed-3`: not started" in text
    assert "95% confidence interval of the mean (Student's t" in text


def test_number_formats():
    assert (
        number(0.81234) == "0.812" and number(None) == "" and number(0.0) == "0.000" and number(0.00123) == "1.23e-03"
    )
    assert number(0.0099, scale=0.5) == "0.010"
    assert final_cell(summarize([])) == "-"
    assert final_cell(summarize([0.61, 0.62, 0.63])) == "0.620 ± 0.010 [0.595, 0.645]"
