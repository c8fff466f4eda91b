"""Run status from run.json, moving unfinished folders aside, and running jobs N at a time."""

import json
import re
import sys

import pytest

from lit_align.sweeps.runner import action_for, attempt_path, execute, move_aside, run_status, thread_env


def make_run(path, status=None, text=None):
    path.mkdir(parents=True)
    if status is not None:
        text = json.dumps({"status": status, "seconds": 12.5})
    if text is not None:
        (path / "run.json").write_text(text, encoding="utf-8")
    return path


def test_status_from_synthetic_run_folders(tmp_path):
    assert run_status(tmp_path / "missing") == "not started"
    assert run_status(make_run(tmp_path / "a", "finished")) == "finished"
    assert run_status(make_run(tmp_path / "b", "running")) == "running"
    assert run_status(make_run(tmp_path / "c", "failed")) == "failed"
    assert run_status(make_run(tmp_path / "d")) == "no run.json"
    assert run_status(make_run(tmp_path / "e", text="{not json")) == "unreadable run.json"
    assert run_status(make_run(tmp_path / "f", text="{}")) == "no status in run.json"


@pytest.mark.parametrize(
    ("status", "action"),
    [("finished", "skip"), ("not started", "run"), ("running", "rerun"), ("failed", "rerun"),
     ("interrupted", "rerun"), ("no run.json", "rerun")],
)  # fmt: skip
def test_only_finished_runs_are_skipped(status, action):
    assert action_for(status) == action


def test_move_aside_takes_the_next_free_attempt_number(tmp_path):
    run = make_run(tmp_path / "seed-1", "running")
    assert attempt_path(run) == tmp_path / "seed-1.attempt-1"
    assert move_aside(run) == tmp_path / "seed-1.attempt-1"
    assert not run.exists() and (tmp_path / "seed-1.attempt-1" / "run.json").is_file()
    make_run(run, "failed")
    assert move_aside(run) == tmp_path / "seed-1.attempt-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed-1.attempt-1", "seed-1.attempt-2"]


def test_threads_are_shared_only_when_runs_are_parallel(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert "OMP_NUM_THREADS" not in thread_env(1, {})
    assert thread_env(4, {})["OMP_NUM_THREADS"] == "4"
    assert thread_env(32, {})["OMP_NUM_THREADS"] == "1"
    assert thread_env(4, {"OMP_NUM_THREADS": "2"})["OMP_NUM_THREADS"] == "2"


def fake_run(status: str | None) -> list[str]:
    """A command that writes run.json with ``status`` into the folder named by argv[1] (None: writes nothing)."""
    code = "import json, pathlib, sys\nprint('hello from the run')\n"
    if status is not None:
        code += f"pathlib.Path(sys.argv[1], 'run.json').write_text(json.dumps({{'status': {status!r}}}))\n"
    return [sys.executable, "-c", code]


def test_execute_logs_each_run_and_reports_progress(tmp_path):
    lines = []
    jobs = [
        ("good/seed-1", [*fake_run("finished"), str(tmp_path / "good")], tmp_path / "good"),
        ("bad/seed-1", [*fake_run("failed"), str(tmp_path / "bad")], tmp_path / "bad"),
        ("silent/seed-1", [*fake_run(None), str(tmp_path / "silent")], tmp_path / "silent"),
    ]
    statuses = execute(jobs, tmp_path, parallel=2, env={}, say=lines.append)
    assert statuses == {"good/seed-1": "finished", "bad/seed-1": "failed", "silent/seed-1": "no run.json"}
    assert sorted(line.split("] ")[0] for line in lines) == ["[1/3", "[2/3", "[3/3"]
    good = next(line for line in lines if "good/seed-1" in line)
    assert re.search(r"\] good/seed-1 finished in \d+ s$", good)
    bad = next(line for line in lines if "bad/seed-1" in line)
    assert bad.endswith(f"bad/seed-1 failed (see {tmp_path / 'bad' / 'output.log'})")
    silent = next(line for line in lines if "silent/seed-1" in line)
    assert "failed (run.json: no run.json)" in silent
    assert "hello from the run" in (tmp_path / "good" / "output.log").read_text(encoding="utf-8")


def test_a_run_that_cannot_start_stops_the_sweep_before_the_next_runs(tmp_path):
    # a misspelt key: lit_align prints one error line and exits before it writes run.json
    message = 'error: Key "trainer.max_stepz" is not expected'
    broken = [sys.executable, "-c", f"import sys; sys.stderr.write({message!r} + '\\n'); sys.exit(2)"]
    jobs = [("a/seed-1", broken, tmp_path / "a")]
    jobs += [(f"b/seed-{n}", [*fake_run("finished"), str(tmp_path / f"b{n}")], tmp_path / f"b{n}") for n in (1, 2)]
    lines = []
    statuses = execute(jobs, tmp_path, parallel=1, env={}, say=lines.append)
    assert statuses == {"a/seed-1": "no run.json", "b/seed-1": "not started", "b/seed-2": "not started"}
    assert lines[0].endswith(f"\n    {message}")
    assert lines[1] == "[2/3] b/seed-1 not started: an earlier run could not start"
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()
