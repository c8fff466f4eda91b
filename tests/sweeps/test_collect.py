"""Final and best values read back from synthetic TensorBoard event files."""

import pytest

from lit_align.sweeps.collect import Metric, collect, parse_metrics
from lit_align.sweeps.grid import SweepError, parse_grid, settings
from lit_align.sweeps.plan import plan_runs

from .synthetic import make_run_dir


def test_parse_metrics_guesses_the_direction():
    metrics = parse_metrics("val/loss, val/rewards/accuracies,val/kl:max,train/nll,val/rewards/margins:min")
    assert [(m.name, m.mode) for m in metrics] == [
        ("val/loss", "min"),
        ("val/rewards/accuracies", "max"),
        ("val/kl", "max"),
        ("train/nll", "min"),
        ("val/rewards/margins", "min"),
    ]
    assert metrics[0].spec == "val/loss:min"


@pytest.mark.parametrize(("text", "message"), [("val/loss:best", "use :min or :max"), (" , ", "no metric named")])
def test_bad_metrics_name_the_text(text, message):
    with pytest.raises(SweepError, match=message):
        parse_metrics(text)


def test_collect_final_best_and_status(tmp_path):
    runs = plan_runs(settings([parse_grid("x.beta=[0.1]")]), [1, 2, 3], tmp_path)
    make_run_dir(runs[0].run_dir, scalars={"val/loss": [(0, 0.7), (10, 0.5), (20, 0.6)],
                                          "val/acc": [(0, 0.5), (10, 0.9), (20, 0.8)]}, seconds=61.0)  # fmt: skip
    make_run_dir(runs[1].run_dir, scalars={"val/loss": [(0, 0.8), (10, 0.4)]})
    make_run_dir(runs[2].run_dir, status="failed", scalars={"val/loss": [(0, 0.1)]})
    results, warnings = collect(runs, [Metric("val/loss", "min"), Metric("val/acc", "max")])
    first, second, failed = results
    assert first.status == "finished" and first.seconds == 61.0
    assert first.final == pytest.approx({"val/loss": 0.6, "val/acc": 0.8})
    assert first.best == pytest.approx({"val/loss": 0.5, "val/acc": 0.9})
    assert [step for step, _ in first.curves["val/loss"]] == [0, 10, 20]
    assert second.final == pytest.approx({"val/loss": 0.4}) and "val/acc" not in second.best
    assert failed.status == "failed" and failed.final == {} and failed.seconds is None
    assert warnings == ["warning: val/acc was not logged by 1 finished run(s): beta-0.1/seed-2"]


def test_a_run_never_started_is_collected_as_such(tmp_path):
    (run,) = plan_runs(settings([]), [1], tmp_path)
    (result,), warnings = collect([run], [Metric("val/loss", "min")])
    assert result.status == "not started" and not result.finished and warnings == []
