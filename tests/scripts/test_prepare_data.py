"""scripts/prepare_data.py reads a recipe's data section and writes the records and the data card."""

import importlib.util
import json

import pytest
import yaml

from ..conftest import DEMO_DATA, ROOT

spec = importlib.util.spec_from_file_location("prepare_data", ROOT / "scripts" / "prepare_data.py")
prepare_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_data)


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["prepare_data.py"])
    config = yaml.safe_load((ROOT / "configs" / "quickstart" / "dpo.yaml").read_text())
    config["model"]["init_args"]["model_name_or_path"] = str(ROOT / "assets" / "tiny-chat")
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    duplicate = tmp_path / "dup.jsonl"
    lines = (DEMO_DATA / "dpo_val.jsonl").read_text(encoding="utf-8").splitlines()
    duplicate.write_text("\n".join(lines[:10] + lines[:3]) + "\n", encoding="utf-8")
    config["data"]["train"] = [{"path": str(DEMO_DATA / "dpo_train.jsonl")}, {"path": str(duplicate), "name": "dup"}]
    config["data"]["val"] = [{"path": str(DEMO_DATA / "dpo_val.jsonl")}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_writes_records_and_data_card(recipe, tmp_path):
    out = tmp_path / "prepared"
    prepare_data.main(["--config", str(recipe), "--output", str(out)])
    train = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    # 2000 demo pairs + 10 new rows of dup.jsonl; its 3 repeated rows are duplicates and are dropped.
    assert len(train) == 2010
    assert {"prompt", "chosen", "rejected", "source", "lang", "row"} <= set(train[0])
    card = (out / "DATA_CARD.md").read_text(encoding="utf-8")
    assert "| dup | dropped/duplicate | 3 |" in card
    assert "| dpo_train | `" in card and "| 2000 | 2000 | 2000 |" in card
    assert "## val" in card and "## Expected training mix" in card


def test_dry_run_checks_a_few_rows_and_writes_nothing(recipe, tmp_path, capsys):
    out = tmp_path / "nothing"
    prepare_data.main(["--config", str(recipe), "--output", str(out), "--dry-run", "--dry-run-rows", "4"])
    printed = capsys.readouterr().out
    assert "dpo_train (auto" in printed and "rows 4, records 4, examples 4" in printed
    assert "nothing written" in printed and not out.exists()
