"""``run.json`` in every run folder (issue 15): the pieces of the record, and the record a real run leaves."""

import hashlib
import json
import re
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_align.checks import ConfigError
from lit_align.cli import AlignCLI, main
from lit_align.data.digest import examples_digest
from lit_align.run_config import SaveRunConfig, config_target, subcommand_of
from lit_align.run_record import (
    config_sha256,
    cpu_name,
    data_summary,
    finish_record,
    git_state,
    now_iso,
    read_record,
    with_previous_attempts,
    write_record,
)

from .conftest import ROOT

QUICKSTART_SFT = str(ROOT / "configs" / "quickstart" / "sft.yaml")
CONTRACT_KEYS = {
    "status", "started", "ended", "seconds", "command", "subcommand", "config_sha256", "seed", "lit_align",
    "versions", "device", "data", "global_step", "previous_attempts",
}  # fmt: skip
HEX64 = re.compile(r"[0-9a-f]{64}")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


def test_git_state_follows_commits_and_edits_of_tracked_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_state(repo) == {"git_commit": head.strip(), "git_dirty": False}
    (repo / "notes.txt").write_text("untracked files do not make a tree dirty\n")
    assert git_state(repo)["git_dirty"] is False
    (repo / "code.py").write_text("x = 2\n")
    assert git_state(repo) == {"git_commit": head.strip(), "git_dirty": True}


def test_git_state_is_null_outside_a_clone_and_for_untracked_folders(tmp_path):
    assert git_state(tmp_path) == {"git_commit": None, "git_dirty": None}
    repo = tmp_path / "project"
    (repo / ".venv" / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "README").write_text("a user's project\n")
    _git(repo, "add", "README")
    _git(repo, "commit", "-q", "-m", "first")
    # a package installed into the project's (untracked) virtual environment is not the project's code
    assert git_state(repo / ".venv" / "pkg") == {"git_commit": None, "git_dirty": None}


def test_config_hash_is_the_sha256_of_the_text():
    assert config_sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert config_sha256("seed_everything: 1\n") == config_sha256("seed_everything: 1\n")
    assert config_sha256("seed_everything: 1\n") != config_sha256("seed_everything: 2\n")


def test_write_record_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "run.json"
    write_record(path, {"status": "running"})
    write_record(path, {"status": "finished", "global_step": 2})
    assert read_record(path) == {"status": "finished", "global_step": 2}
    with pytest.raises(TypeError):  # not JSON: the write fails half-way, the file keeps its last whole version
        write_record(path, {"status": "failed", "bad": object()})
    assert read_record(path) == {"status": "finished", "global_step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_read_record_of_a_missing_or_broken_file_is_none(tmp_path):
    assert read_record(tmp_path / "run.json") is None
    (tmp_path / "run.json").write_text('{"status": "runn')
    assert read_record(tmp_path / "run.json") is None


def test_data_summary_counts_and_digests_each_split():
    train = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    datamodule = SimpleNamespace(train_data=SimpleNamespace(examples=train), val_data=None)
    summary = data_summary(datamodule)
    assert summary == {"train": {"examples": 2, "sha256": examples_digest(train)}, "val": None}
    assert HEX64.fullmatch(summary["train"]["sha256"])
    assert data_summary(None) == {"train": None, "val": None}


def test_cpu_name_reads_the_model_name(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n")
    assert cpu_name(cpuinfo) == "Intel(R) Xeon(R) Gold 6338"


def test_finish_record_sets_the_end_and_the_error():
    record = {"status": "running", "started": "2026-01-31T12:00:00+00:00", "ended": None, "seconds": None}
    failed = finish_record(record, "failed", error="RuntimeError: boom", global_step=7)
    assert (failed["status"], failed["error"], failed["global_step"]) == ("failed", "RuntimeError: boom", 7)
    assert failed["seconds"] > 0 and failed["ended"] > record["started"]
    assert record["status"] == "running"  # a copy: the running record is not changed
    assert "error" not in finish_record(failed, "finished", global_step=9)


def test_previous_attempts_keep_every_earlier_record_oldest_first():
    first = {"status": "running", "started": "1", "previous_attempts": []}
    second = with_previous_attempts({"status": "failed", "started": "2", "previous_attempts": []}, first)
    third = with_previous_attempts({"status": "finished", "started": "3", "previous_attempts": []}, second)
    assert [a["started"] for a in third["previous_attempts"]] == ["1", "2"]
    assert all("previous_attempts" not in a for a in third["previous_attempts"])
    assert with_previous_attempts(first, None) == first


def test_a_run_json_alone_stops_a_new_run_but_not_a_resumed_one(tmp_path):
    (tmp_path / "run.json").write_text('{"status": "finished"}')
    with pytest.raises(ConfigError) as error:
        config_target(tmp_path, resuming=False)
    assert str(error.value).startswith(f"{tmp_path / 'run.json'} exists and this run did not write it")
    assert "--trainer.default_root_dir" in str(error.value)
    assert config_target(tmp_path, resuming=True) == tmp_path / "config.yaml"


def test_subcommand_of_reads_the_subcommand_parsers_prog():
    assert subcommand_of(SimpleNamespace(prog="lit_align [options] fit")) == "fit"
    assert subcommand_of(SimpleNamespace(prog="lit_align [options] validate")) == "validate"
    assert subcommand_of(SimpleNamespace(prog="lit_align")) is None


def _recording_callback(tmp_path: Path, subcommand: str) -> SaveRunConfig:
    """A SaveRunConfig whose record is already written, as on rank zero after `setup`."""
    callback = SaveRunConfig(SimpleNamespace(prog=f"lit_align [options] {subcommand}"), {})
    callback._record = {"status": "running", "started": now_iso(), "ended": None, "seconds": None}
    callback._record_path = tmp_path / "run.json"
    return callback


@pytest.mark.parametrize(
    ("exception", "status", "error"),
    [
        (KeyboardInterrupt(), "interrupted", None),
        (SIGTERMException(), "interrupted", None),
        (ValueError("lr must be positive"), "failed", "ValueError: lr must be positive"),
    ],
)
def test_an_exception_ends_the_record(tmp_path, exception, status, error):
    callback = _recording_callback(tmp_path, "fit")
    callback.on_exception(SimpleNamespace(global_step=7), None, exception)
    record = read_record(tmp_path / "run.json")
    assert (record["status"], record.get("error"), record["global_step"]) == (status, error, 7)


def test_only_the_subcommands_own_teardown_finishes_the_record(tmp_path):
    callback = _recording_callback(tmp_path, "fit")
    callback.teardown(SimpleNamespace(global_step=0), None, "validate")  # validate_before_training, inside fit
    assert not (tmp_path / "run.json").exists()
    callback.teardown(SimpleNamespace(global_step=2), None, "fit")
    assert read_record(tmp_path / "run.json")["status"] == "finished"


def test_a_callback_without_a_record_writes_nothing(tmp_path):
    """Non-zero ranks, and a run refused before its record (the folder was another run's), leave no run.json."""
    callback = SaveRunConfig(SimpleNamespace(prog="lit_align [options] fit"), {})
    callback.on_exception(SimpleNamespace(global_step=0), None, ConfigError("refused"))
    callback.teardown(SimpleNamespace(global_step=0), None, "fit")
    assert list(tmp_path.iterdir()) == []


def _fit_args(*overrides: str, logger_dir: Path | None = None, run_dir: Path | None = None) -> list[str]:
    if logger_dir is not None:
        logger = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                  "init_args": {"save_dir": str(logger_dir), "name": "run"}}  # fmt: skip
        where = ["--trainer.logger", json.dumps(logger)]
    else:
        where = ["--trainer.logger", "false", "--trainer.default_root_dir", str(run_dir)]
    return ["fit", "--config", QUICKSTART_SFT, *where, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
            "--data.max_val_examples", "16", "--validate_before_training", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.callbacks", "[]", *overrides]  # fmt: skip


@pytest.fixture
def _at_the_root(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit_align"])  # LightningCLI warns when both pytest's argv and args are given
    monkeypatch.chdir(ROOT)  # the recipe's paths (assets/...) are relative to the repository


@pytest.mark.usefixtures("_at_the_root")
def test_a_finished_fit_records_everything(tmp_path, monkeypatch):
    args = _fit_args("--validate_before_training", "true", logger_dir=tmp_path)
    monkeypatch.setattr("sys.argv", ["lit_align", *args])
    between: list[str] = []
    before_fit = AlignCLI.before_fit

    def validate_then_look(cli: AlignCLI) -> None:
        before_fit(cli)  # the validation before training has run and torn down: the run is still going
        between.append(read_record(Path(cli.trainer.log_dir) / "run.json")["status"])

    monkeypatch.setattr(AlignCLI, "before_fit", validate_then_look)
    main(args)
    run_dir = tmp_path / "run" / "version_0"
    record = json.loads((run_dir / "run.json").read_text())
    assert between == ["running"]
    assert CONTRACT_KEYS <= record.keys()
    assert (record["status"], record["subcommand"], record["global_step"], record["seed"]) == ("finished", "fit", 2, 42)
    assert record["seconds"] > 0 and record["ended"] > record["started"]
    assert record["command"] == ["lit_align", *args]
    assert record["config_sha256"] == hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
    assert record["data"]["train"]["examples"] > 0 and record["data"]["val"]["examples"] == 16
    assert HEX64.fullmatch(record["data"]["train"]["sha256"]) and HEX64.fullmatch(record["data"]["val"]["sha256"])
    assert record["lit_align"]["version"] and set(record["lit_align"]) == {"version", "git_commit", "git_dirty"}
    assert set(record["versions"]) == {"python", "torch", "lightning", "transformers", "peft"}
    assert record["device"]["accelerator"] == "cpu" and record["device"]["precision"] == "32-true"
    assert (record["device"]["devices"], record["device"]["world_size"]) == (1, 1)
    assert record["previous_attempts"] == [] and "error" not in record


@pytest.mark.usefixtures("_at_the_root")
def test_a_run_that_fails_inside_fit_records_the_error(tmp_path, monkeypatch):
    def broken_step(self, batch, batch_idx):
        raise RuntimeError("the loss exploded at step 0")

    monkeypatch.setattr("lit_align.modules.SFTModule.training_step", broken_step)
    with pytest.raises(RuntimeError, match="exploded"):
        main(_fit_args(logger_dir=tmp_path))
    record = read_record(tmp_path / "run" / "version_0" / "run.json")
    assert (record["status"], record["error"]) == ("failed", "RuntimeError: the loss exploded at step 0")
    assert record["global_step"] == 0 and record["seconds"] > 0


@pytest.mark.usefixtures("_at_the_root")
def test_ctrl_c_during_fit_records_an_interrupted_run(tmp_path, monkeypatch):
    def interrupted_step(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr("lit_align.modules.SFTModule.training_step", interrupted_step)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown exits with 1
            main(_fit_args(logger_dir=tmp_path))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl+C from then on
    assert read_record(tmp_path / "run" / "version_0" / "run.json")["status"] == "interrupted"


@pytest.mark.slow
@pytest.mark.usefixtures("_at_the_root")
def test_a_resumed_run_keeps_the_first_attempt(tmp_path):
    main(_fit_args(run_dir=tmp_path))
    first = read_record(tmp_path / "run.json")
    last = tmp_path / "checkpoints" / "last.ckpt"
    main(_fit_args("--trainer.max_steps", "3", "--ckpt_path", str(last), run_dir=tmp_path))
    record = read_record(tmp_path / "run.json")
    assert (record["status"], record["global_step"]) == ("finished", 3)
    assert record["previous_attempts"] == [{k: v for k, v in first.items() if k != "previous_attempts"}]
    assert record["config_sha256"] == hashlib.sha256((tmp_path / "config.resume-1.yaml").read_bytes()).hexdigest()
    assert record["data"] == first["data"]
