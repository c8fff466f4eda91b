"""scripts/diff_runs.py: step-by-step differences of two runs' scalars, and an exit status a CI job can read."""

import importlib.util

from torch.utils.tensorboard import SummaryWriter

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("diff_runs", ROOT / "scripts" / "diff_runs.py")
diff_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diff_runs)


def _run(path, losses, speed=1.0):
    with SummaryWriter(str(path)) as writer:
        for step, loss in enumerate(losses):
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("perf/tokens_per_sec", speed * (step + 1), step)
    return path


def test_same_runs_pass_and_timings_are_not_results(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.6931, 0.5, 0.25])
    b = _run(tmp_path / "b", [0.6931, 0.5, 0.25], speed=3.0)  # a faster machine: perf/ differs, results do not
    assert diff_runs.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| train/loss | 3 | 0 |" in out and "perf/" not in out


def test_a_difference_above_the_tolerance_or_other_steps_fail(tmp_path, capsys):
    a = _run(tmp_path / "a", [0.6931, 0.5, 0.25])
    b = _run(tmp_path / "b", [0.6931, 0.5, 0.2501])
    assert diff_runs.main([str(a), str(b), "--tolerance", "1e-3"]) == 0  # |0.25 - 0.2501| = 1e-4
    assert diff_runs.main([str(a), str(b), "--tolerance", "1e-5"]) == 1
    c = _run(tmp_path / "c", [0.6931, 0.5])
    assert diff_runs.main([str(a), str(c)]) == 1
    assert "steps differ" in capsys.readouterr().out
