"""scripts/sweep.py: the command line, and end to end through `lit_align fit` (resume included)."""

import importlib.util
import json

import pytest

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("sweep", ROOT / "scripts" / "sweep.py")
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)

BETA = "model.init_args.loss.init_args.beta"
# 2 steps, validation after each on 16 examples, no validation before training, no sample generation.
FAST = [
    *("--set", "trainer.max_steps=2", "--set", "trainer.val_check_interval=1"),
    *("--set", "validate_before_training=false", "--set", "data.max_val_examples=16", "--set", "trainer.callbacks=[]"),
]


def test_bad_grid_is_one_error_line(capsys):
    assert sweep.main(["--config", "configs/quickstart/dpo.yaml", "--grid", f"{BETA}=0.1", "--dry-run"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --grid '{BETA}=0.1': the values must be a list in brackets, e.g. {BETA}=[0.05,0.1]\n"
    )


def test_missing_recipe_is_named(capsys):
    assert sweep.main(["--config", "configs/nope.yaml", "--dry-run"]) == 2
    assert "--config configs/nope.yaml: no such file" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_the_total(tmp_path, capsys):
    argv = ["--config", "configs/quickstart/dpo.yaml", "--grid", f"{BETA}=[0.05,0.1]", "--grid",
            "model.init_args.loss.init_args.loss_type=[sigmoid,ipo]", "--seeds", "1,7,42",
            "--set", "trainer.max_steps=20", "--output", str(tmp_path / "s"), "--dry-run"]  # fmt: skip
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Sweep: 4 setting(s) × 3 seed(s) = 12 runs in {tmp_path / 's'}"
    assert out[2].split() == [
        "beta=0.05,",
        "loss_type=sigmoid",
        "1",
        "run",
        "20",
        "runs/beta-0.05_loss_type-sigmoid/seed-1",
    ]
    assert out[-1] == "to do: 12 of 12 runs (0 finished, skipped); 240 optimizer steps"
    assert not (tmp_path / "s").exists()


def test_default_output_is_named_after_the_first_recipe(capsys):
    assert sweep.main(["--config", "configs/beta_dpo/quickstart.yaml", "--seeds", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(f"runs in {ROOT / 'logs' / 'sweeps' / 'quickstart'}")


def test_help_says_runs_share_the_machine(capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--help"])
    assert "They share this machine" in capsys.readouterr().out


@pytest.mark.slow
def test_sweep_end_to_end_with_resume(tmp_path, capsys):
    """2 values x 2 seeds of 2 steps each (about 20 s a run on 2 cores), then the same command (nothing to do),
    then again after one run.json is made "running" (that run is moved aside and run again)."""
    out = tmp_path / "sweep"
    argv = ["--config", "configs/quickstart/dpo.yaml", "--grid", f"{BETA}=[0.05,0.1]", "--seeds", "2", *FAST,
            "--output", str(out), "--jobs", "2"]  # fmt: skip
    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count(" finished in ") == 4
    for name in ("sweep.json", "sweep.csv", "summary.csv", "summary.md", "curves.png", "final.png"):
        assert (out / name).is_file(), name
    rows = [line for line in (out / "summary.md").read_text(encoding="utf-8").splitlines() if line.startswith("| [")]
    assert [row.split("|")[1].strip() for row in rows] == ["[beta=0.05](runs/beta-0.05/)", "[beta=0.1](runs/beta-0.1/)"]
    assert all(row.split("|")[2].strip() == "2" and " ± " in row and " [" in row for row in rows)
    events = sorted(p.name for p in out.glob("runs/*/seed-*/events.out.tfevents.*"))
    assert len(events) == 4

    assert sweep.main(argv) == 0
    assert "running 0 run(s), 2 at a time; 4 finished already" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("runs/*/seed-*/events.out.tfevents.*")) == events

    record_path = out / "runs" / "beta-0.1" / "seed-2" / "run.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record_path.write_text(json.dumps({**record, "status": "running"}), encoding="utf-8")
    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert "beta-0.1/seed-2: running, moved aside to seed-2.attempt-1" in printed
    assert "[1/1] beta-0.1/seed-2 finished in" in printed
    assert json.loads(record_path.read_text(encoding="utf-8"))["status"] == "finished"
    assert (out / "runs" / "beta-0.1" / "seed-2.attempt-1" / "run.json").is_file()
