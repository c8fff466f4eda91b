"""scripts/plot_runs.py: one PNG per metric group with data, several runs overlaid."""

import importlib.util

import pytest
from torch.utils.tensorboard import SummaryWriter

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("plot_runs", ROOT / "scripts" / "plot_runs.py")
plot_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_runs)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_run(run_dir, scale):
    with SummaryWriter(run_dir) as writer:
        for step in range(10):
            writer.add_scalar("train/loss", scale / (step + 1), step)
            writer.add_scalar("perf/tokens_per_sec", 1000.0 * scale, step)
            writer.add_scalar("perf/padding_fraction", 0.2, step)
        writer.add_scalar("val/loss", scale / 5, 9)


def test_plots_each_group_with_data(tmp_path):
    runs = [tmp_path / "logs" / "exp" / "version_0", tmp_path / "logs" / "exp" / "version_1"]
    for scale, run in enumerate(runs, start=1):
        _write_run(run, scale)
    out = tmp_path / "plots"

    written = plot_runs.main([*map(str, runs), "--output", str(out)])

    assert sorted(p.name for p in written) == ["loss.png", "throughput.png"]  # no rewards logged: skipped
    assert not (out / "rewards.png").exists()
    for path in written:
        data = path.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5_000


def test_an_experiment_directory_stands_for_its_runs(tmp_path):
    for version in range(2):
        _write_run(tmp_path / "exp" / f"version_{version}", 1)
    assert [p.name for p in plot_runs.run_dirs([tmp_path / "exp"])] == ["version_0", "version_1"]


def test_a_second_call_writes_a_new_folder_and_labels_name_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "logs" / "exp" / "version_3"
    _write_run(run, 1)
    (run.parent / "latest").symlink_to("version_3")
    first = plot_runs.main([str(run)])
    second = plot_runs.main([str(run.parent / "latest")])
    assert {p.parent.resolve() for p in first} == {tmp_path / "logs" / "plots" / "0"}
    assert {p.parent.resolve() for p in second} == {tmp_path / "logs" / "plots" / "1"}
    assert plot_runs.run_label(run.parent / "latest") == "exp/version_3"
    with pytest.raises(SystemExit, match="--overwrite"):
        plot_runs.main([str(run), "--output", str(tmp_path / "logs" / "plots" / "0")])
