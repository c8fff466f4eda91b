"""`run_sweep` from plan to report, with each `lit_align fit` replaced by a script that writes what a run leaves
(run.json and event files) in a fraction of a second."""

import csv
import json
import sys

import pytest

from lit_align.sweeps import SweepError, SweepSpec, parse_grid, parse_metrics, run_sweep

FAKE_FIT = """
import json, pathlib, sys, time
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

run_dir, seed, beta = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
run_dir.mkdir(parents=True, exist_ok=True)
if beta < 0:
    (run_dir / "run.json").write_text(json.dumps({"status": "failed", "error": "ValueError: negative beta"}))
    sys.exit(1)
writer = EventFileWriter(str(run_dir))
for step in (0, 10):
    accuracy = 0.5 + beta * step / 10 + 0.01 * seed  # final: 0.5 + beta + 0.01 seed
    value = Summary.Value(tag="val/rewards/accuracies", simple_value=accuracy)
    writer.add_event(Event(step=step, wall_time=time.time(), summary=Summary(value=[value])))
writer.close()
(run_dir / "run.json").write_text(json.dumps({"status": "finished", "seconds": 3.0}))
"""


@pytest.fixture
def fake_fit(tmp_path, monkeypatch):
    script = tmp_path / "fake_fit.py"
    script.write_text(FAKE_FIT, encoding="utf-8")
    calls = []

    def command(run, configs, sets):
        calls.append(run.name)
        return [sys.executable, str(script), str(run.run_dir), str(run.seed), run.setting.values["x.beta"].text]

    monkeypatch.setattr("lit_align.sweeps.sweep.fit_command", command)
    return calls


def spec(tmp_path, grid="x.beta=[0.1,0.2]", seeds=(1, 2), sets=(("trainer.max_steps", "10"),), **kwargs):
    return SweepSpec(
        configs=["configs/quickstart/dpo.yaml"],
        axes=[parse_grid(grid)],
        seeds=list(seeds),
        metrics=parse_metrics("val/rewards/accuracies"),
        sets=list(sets),
        output=tmp_path / "sweep",
        command=["python", "scripts/sweep.py", "--grid", grid],
        **kwargs,
    )


def test_dry_run_lists_the_plan_and_runs_nothing(tmp_path, fake_fit):
    lines = []
    assert run_sweep(spec(tmp_path, dry_run=True), say=lines.append) == 0
    assert lines[0] == f"Sweep: 2 setting(s) × 2 seed(s) = 4 runs in {tmp_path / 'sweep'}"
    assert lines[1].split() == ["setting", "seed", "action", "steps", "run", "dir"]
    assert lines[2].split() == ["beta=0.1", "1", "run", "10", "runs/beta-0.1/seed-1"]
    assert lines[-1] == "to do: 4 of 4 runs (0 finished, skipped); 40 optimizer steps"
    assert fake_fit == [] and not (tmp_path / "sweep").exists()


def test_sweep_runs_reports_and_resumes(tmp_path, fake_fit):
    lines = []
    assert run_sweep(spec(tmp_path), say=lines.append) == 0
    out = tmp_path / "sweep"
    assert sorted(fake_fit) == ["beta-0.1/seed-1", "beta-0.1/seed-2", "beta-0.2/seed-1", "beta-0.2/seed-2"]
    assert {p.name for p in out.iterdir()} >= {"sweep.json", "sweep.csv", "summary.csv", "summary.md", "curves.png",
                                               "final.png", "runs"}  # fmt: skip
    summary = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    # beta 0.1: finals 0.61 and 0.62 -> mean 0.615; beta 0.2: 0.71 and 0.72 -> 0.715
    assert [float(row["val/rewards/accuracies mean"]) for row in summary] == pytest.approx([0.615, 0.715])
    assert json.loads((out / "sweep.json").read_text(encoding="utf-8"))["seeds"] == [1, 2]

    fake_fit.clear()
    lines.clear()
    assert run_sweep(spec(tmp_path), say=lines.append) == 0
    assert fake_fit == [] and "running 0 run(s), 1 at a time; 4 finished already" in lines

    record = out / "runs" / "beta-0.2" / "seed-1" / "run.json"
    record.write_text(json.dumps({"status": "running"}), encoding="utf-8")
    lines.clear()
    assert run_sweep(spec(tmp_path, seeds=(1, 2, 3)), say=lines.append) == 0
    assert sorted(fake_fit) == ["beta-0.1/seed-3", "beta-0.2/seed-1", "beta-0.2/seed-3"]
    assert "beta-0.2/seed-1: running, moved aside to seed-1.attempt-1" in lines
    assert (out / "runs" / "beta-0.2" / "seed-1.attempt-1" / "run.json").is_file()
    rows = list(csv.DictReader((out / "sweep.csv").open(encoding="utf-8")))
    assert len(rows) == 6 and {row["status"] for row in rows} == {"finished"}


def test_failed_runs_are_listed_and_give_exit_code_1(tmp_path, fake_fit):
    lines = []
    assert run_sweep(spec(tmp_path, grid="x.beta=[0.1,-1]", seeds=(1,)), say=lines.append) == 1
    rows = list(csv.DictReader((tmp_path / "sweep" / "sweep.csv").open(encoding="utf-8")))
    assert [row["status"] for row in rows] == ["finished", "failed"]
    log = tmp_path / "sweep" / "runs" / "beta--1" / "seed-1" / "output.log"
    assert f"[2/2] beta--1/seed-1 failed (see {log})" in lines
    assert lines[-1] == "1 run(s) not finished: beta--1/seed-1 (failed)"


def test_other_fixed_settings_are_refused_before_running(tmp_path, fake_fit):
    run_sweep(spec(tmp_path, seeds=(1,)), say=lambda line: None)
    fake_fit.clear()
    with pytest.raises(SweepError, match="trainer.max_steps=10, trainer.max_steps=20"):
        run_sweep(spec(tmp_path, seeds=(1,), sets=(("trainer.max_steps", "20"),), dry_run=True), say=print)
    assert fake_fit == []


def test_setting_errors(tmp_path):
    with pytest.raises(SweepError, match="x.beta is both in --set and in --grid"):
        run_sweep(spec(tmp_path, sets=(("x.beta", "1"),)))
    no_recipe = spec(tmp_path)
    no_recipe.configs = []
    with pytest.raises(SweepError, match="no recipe: give --config"):
        run_sweep(no_recipe)
