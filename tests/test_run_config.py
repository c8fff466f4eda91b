"""Where a run saves its config.yaml, and `trainer.enable_checkpointing: false` (issue 11, items 3 and 15)."""

from pathlib import Path

import pytest

from lit_align.checks import ConfigError
from lit_align.cli import main
from lit_align.run_config import config_target

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_SFT = str(ROOT / "configs" / "quickstart" / "sft.yaml")


def test_a_new_folder_gets_config_yaml(tmp_path):
    assert config_target(tmp_path, resuming=False) == tmp_path / "config.yaml"
    assert config_target(tmp_path, resuming=True) == tmp_path / "config.yaml"


def test_an_existing_config_yaml_stops_a_new_run(tmp_path):
    (tmp_path / "config.yaml").write_text("a user's recipe\n")
    with pytest.raises(ConfigError) as error:
        config_target(tmp_path, resuming=False)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'config.yaml'} exists and this run did not write it")
    assert "--trainer.default_root_dir" in message


def test_a_resumed_run_writes_beside_the_original(tmp_path):
    (tmp_path / "config.yaml").write_text("first\n")
    assert config_target(tmp_path, resuming=True) == tmp_path / "config.resume-1.yaml"
    (tmp_path / "config.resume-1.yaml").write_text("second\n")
    assert config_target(tmp_path, resuming=True) == tmp_path / "config.resume-2.yaml"


def _fit_without_logger(run_dir: Path, *overrides: str) -> None:
    main(["fit", "--config", QUICKSTART_SFT, "--trainer.logger", "false", "--trainer.default_root_dir", str(run_dir),
          "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--data.max_val_examples", "16",
          "--validate_before_training", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.callbacks", "[]", *overrides])  # fmt: skip


@pytest.fixture
def _at_the_root(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit_align"])
    monkeypatch.chdir(ROOT)  # the recipe's paths (assets/...) are relative to the repository


@pytest.mark.slow
@pytest.mark.usefixtures("_at_the_root")
def test_logger_false_never_replaces_a_users_config_yaml(tmp_path, capsys):
    recipe = tmp_path / "config.yaml"
    recipe.write_text("my own recipe\n")
    with pytest.raises(SystemExit) as exit_info:
        _fit_without_logger(tmp_path)
    assert exit_info.value.code == 2
    assert f"error: {recipe} exists and this run did not write it" in capsys.readouterr().err
    assert recipe.read_text() == "my own recipe\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no checkpoints, no export


@pytest.mark.slow
@pytest.mark.usefixtures("_at_the_root")
def test_logger_false_saves_in_the_run_folder_and_a_resume_keeps_the_first_config(tmp_path):
    _fit_without_logger(tmp_path)
    first = (tmp_path / "config.yaml").read_text()
    assert "max_steps: 2" in first
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    last = tmp_path / "checkpoints" / "last.ckpt"
    _fit_without_logger(tmp_path, "--trainer.max_steps", "3", "--ckpt_path", str(last))
    assert (tmp_path / "config.yaml").read_text() == first
    resumed = (tmp_path / "config.resume-1.yaml").read_text()
    assert "max_steps: 3" in resumed and "last.ckpt" in resumed


@pytest.mark.slow
@pytest.mark.usefixtures("_at_the_root")
def test_enable_checkpointing_false_trains_without_checkpoints(tmp_path):
    _fit_without_logger(tmp_path, "--trainer.enable_checkpointing", "false")
    assert not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert (tmp_path / "config.yaml").is_file()
