"""scripts/compare.py: the quickstart recipes as a sweep's grid, trained through `lit_align fit`."""

import importlib.util

import pytest

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("compare", ROOT / "scripts" / "compare.py")
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def test_the_preset_is_five_recipes_times_three_seeds(tmp_path, capsys):
    assert compare.main(["--output", str(tmp_path / "compare"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Comparison: 5 setting(s) × 3 seed(s) = 15 runs in {tmp_path / 'compare'}"
    labels = [line.split("  ")[0] for line in out[2:-1]]
    names = ["DPO", "beta-DPO", "fusion-beta DPO", "ORPO", "preference-guided DPO"]
    assert labels == [name for name in names for _ in range(3)]
    assert "runs/beta_dpo-quickstart/seed-2" in out[6]
    assert out[-1] == "to do: 15 of 15 runs (0 finished, skipped); 3000 optimizer steps"


def test_only_and_steps(tmp_path):
    built = compare.build_spec(["--only", "ORPO", "DPO", "--steps", "10", "--val-every", "5", "--seeds", "1,2"])
    assert [value.label for value in built.axes[0].values] == ["ORPO", "DPO"]
    assert built.sets == [("trainer.max_steps", "10"), ("trainer.val_check_interval", "5")]
    assert built.seeds == [1, 2] and built.output == ROOT / "logs" / "compare"
    assert [m.name for m in built.metrics] == ["val/loss", "val/rewards/accuracies", "val/rewards/margins"]
    assert any("compare its reward accuracy" in note for note in built.notes)


@pytest.mark.slow
def test_compare_writes_the_sweep_files(tmp_path):
    out = tmp_path / "compare"
    assert (
        compare.main(["--only", "DPO", "--steps", "4", "--val-every", "4", "--seeds", "1", "--output", str(out)]) == 0
    )
    table = (out / "summary.md").read_text(encoding="utf-8")
    row = next(line for line in table.splitlines() if line.startswith("| [DPO](runs/quickstart-dpo/) |"))
    assert row.split("|")[2].strip() == "1"
    accuracy = float(row.split("|")[4])
    assert 0.0 <= accuracy <= 1.0
    for name in ("curves.png", "final.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
