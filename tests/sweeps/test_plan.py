"""Seeds, the runs of a plan, their commands and their length in optimizer steps."""

import json
import sys
from pathlib import Path

import pytest

from lit_align.sweeps.grid import SweepError, parse_grid, settings
from lit_align.sweeps.plan import config_path, fit_command, length_text, parse_seeds, plan_runs, run_length

from ..conftest import ROOT


@pytest.mark.parametrize(("text", "seeds"), [("3", [1, 2, 3]), ("1", [1]), ("1,7,42", [1, 7, 42]), ("5,", [5])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [("0", "at least 1"), ("a", "expected a count"), ("1,1", "distinct"), ("1,-2", "not negative"), (",", "no seed")],
)
def test_bad_seeds_name_the_text(text, message):
    with pytest.raises(SweepError, match=message) as error:
        parse_seeds(text)
    assert f"--seeds {text!r}" in str(error.value)


def test_plan_is_settings_times_seeds(tmp_path):
    axes = [parse_grid("a.beta=[0.05,0.1,0.2]"), parse_grid("a.rule=[x,y]")]
    runs = plan_runs(settings(axes), [1, 2], tmp_path)
    assert len(runs) == 3 * 2 * 2
    assert runs[0].run_dir == tmp_path / "runs" / "beta-0.05_rule-x" / "seed-1"
    assert runs[1].name == "beta-0.05_rule-x/seed-2"
    assert len({run.run_dir for run in runs}) == 12


def test_fit_command_orders_recipes_overrides_and_the_run_folder(tmp_path):
    axes = [
        parse_grid("config=[configs/beta_dpo/quickstart.yaml]"),
        parse_grid("model.init_args.loss.init_args.beta=[0.05]"),
    ]
    (run,) = plan_runs(settings(axes), [7], tmp_path / "out")
    command = fit_command(run, ["base.yaml"], [("trainer.max_steps", "20")])
    assert command[:4] == [sys.executable, "-m", "lit_align", "fit"]
    assert command[4:8] == ["--config", "base.yaml", "--config", "configs/beta_dpo/quickstart.yaml"]
    assert command[8:10] == ["--trainer.max_steps=20", "--model.init_args.loss.init_args.beta=0.05"]
    assert "--seed_everything=7" in command
    logger = json.loads(next(arg for arg in command if arg.startswith("--trainer.logger=")).split("=", 1)[1])
    assert logger["init_args"] == {
        "save_dir": str(tmp_path / "out" / "runs"),
        "name": run.setting.slug,
        "version": "seed-7",
    }


def test_run_length_reads_the_recipes_then_the_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("trainer:\n  max_steps: 200\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("trainer:\n  max_steps: 50\n", encoding="utf-8")
    (tmp_path / "epochs.yaml").write_text("trainer:\n  max_steps: -1\n  max_epochs: 3\n", encoding="utf-8")
    assert run_length(["a.yaml"], [], tmp_path) == (200, None)
    assert run_length(["a.yaml", "b.yaml"], [], tmp_path) == (50, None)
    assert run_length(["a.yaml", "b.yaml"], [("trainer.max_steps", "20")], tmp_path) == (20, None)
    assert run_length(["epochs.yaml"], [], tmp_path) == (None, 3)
    assert run_length([str(tmp_path / "a.yaml")], [("trainer.max_steps", "-1")], Path("/")) == (None, None)
    assert length_text(20, None) == "20" and length_text(None, 3) == "max_epochs=3" and length_text(None, None) == "?"


def test_config_path_is_relative_to_the_root_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path("configs/quickstart/dpo.yaml", ROOT) == "configs/quickstart/dpo.yaml"
    assert config_path(ROOT / "configs" / "quickstart" / "dpo.yaml", ROOT) == "configs/quickstart/dpo.yaml"
    (tmp_path / "mine.yaml").write_text("{}\n", encoding="utf-8")
    assert config_path("mine.yaml", ROOT) == str(tmp_path / "mine.yaml")
    with pytest.raises(SweepError, match="--config nope.yaml: no such file"):
        config_path("nope.yaml", ROOT)
