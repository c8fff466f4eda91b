"""curves.png and final.png are written, and the mean curve uses only the steps every seed logged."""

import pytest

from lit_align.sweeps.collect import Metric, RunResult
from lit_align.sweeps.grid import parse_grid, settings
from lit_align.sweeps.plan import plan_runs
from lit_align.sweeps.plots import mean_curve, plot_curves, plot_final

PNG = b"\x89PNG\r\n\x1a\n"


def test_mean_curve_on_common_steps():
    steps, means, stds = mean_curve([[(0, 1.0), (10, 0.5), (20, 0.3)], [(0, 3.0), (10, 0.7)]])
    assert steps == [0, 10]
    assert means == pytest.approx([2.0, 0.6])
    assert stds == pytest.approx([2**0.5, 0.02**0.5])
    assert mean_curve([]) == ([], [], [])
    assert mean_curve([[(5, 1.0)]]) == ([5], [1.0], [0.0])


def test_plots_are_written(tmp_path):
    metrics = [Metric("val/loss", "min"), Metric("val/acc", "max")]
    the_settings = settings([parse_grid("x.beta=[0.05,0.1,0.2]")])
    runs = plan_runs(the_settings, [1, 2], tmp_path)
    results = []
    for i, run in enumerate(runs):
        curve = [(step, 1.0 - 0.01 * step - 0.02 * i) for step in (0, 10, 20)]
        results.append(RunResult(run, "finished", 1.0, {"val/loss": curve[-1][1]}, {"val/loss": curve[-1][1]},
                                 {"val/loss": curve}))  # fmt: skip
    results[-1] = RunResult(runs[-1], "failed")  # beta=0.2 has one seed: a bar without an error bar
    for plot, name in ((plot_curves, "curves.png"), (plot_final, "final.png")):
        path = plot(tmp_path / name, the_settings, metrics, results)  # val/acc: an empty panel, not a crash
        data = path.read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
