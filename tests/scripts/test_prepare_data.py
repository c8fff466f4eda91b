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


@pytest.fixture
def small_recipe(recipe, tmp_path):
    """The recipe on 40 training pairs (weight 2) and 10 validation pairs."""
    config = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    for name, source, rows in (("train_40", "dpo_train.jsonl", 40), ("val_10", "dpo_val.jsonl", 10)):
        lines = (DEMO_DATA / source).read_text(encoding="utf-8").splitlines(keepends=True)
        (tmp_path / f"{name}.jsonl").write_text("".join(lines[:rows]), encoding="utf-8")
    config["data"]["train"] = [{"path": str(tmp_path / "train_40.jsonl"), "weight": 2.0}]
    config["data"]["val"] = [{"path": str(tmp_path / "val_10.jsonl")}]
    config["data"]["cache_dir"] = str(tmp_path / "cache")
    recipe.write_text(yaml.safe_dump(config), encoding="utf-8")
    return recipe


def _meta(folder) -> dict:
    return json.loads((folder / "meta.json").read_text(encoding="utf-8"))


def test_writes_the_splits_in_the_cache_format_with_their_recipe(small_recipe, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare_data.main(["--config", str(small_recipe), "--output", str(out)])
    entries = {_meta(p)["key"]: p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
    for split, count in (("train", 40), ("val", 10)):
        meta = _meta(out / split)
        assert meta == _meta(entries[meta["key"]])  # a copy of the cache entry, the recipe fields included
        assert meta["count"] == count
        assert meta["settings"]["max_length"] == 256 and meta["settings"]["task"] == "preference"
        assert set(meta["tokenizer"]["files"]) == {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    assert [(s["path"], s["weight"]) for s in _meta(out / "train")["sources"]] == [
        (str(tmp_path / "train_40.jsonl"), 2.0)
    ]
    # The second call reads the cache: nothing is tokenised, and it writes the same folders.
    import lit_align.data.parallel as parallel

    monkeypatch.setattr(parallel, "tokenize_record", lambda *a, **k: pytest.fail("tokenised on a cache hit"))
    prepare_data.main(["--config", str(small_recipe), "--output", str(tmp_path / "again")])
    assert _meta(tmp_path / "again" / "train") == _meta(out / "train")


def test_without_the_cache_the_folder_holds_the_same_examples(small_recipe, tmp_path):
    prepare_data.main(["--config", str(small_recipe), "--output", str(tmp_path / "cached")])
    prepare_data.main(["--config", str(small_recipe), "--output", str(tmp_path / "fresh"), "--data.cache", "false"])
    for split in ("train", "val"):
        cached, fresh = _meta(tmp_path / "cached" / split), _meta(tmp_path / "fresh" / split)
        assert fresh["examples_sha256"] == cached["examples_sha256"]  # no `split`/`index` columns slipped in
        assert fresh["example_columns"] == cached["example_columns"]
        assert fresh["key"] == cached["key"]


def test_overwrite_replaces_its_own_splits_and_nothing_else(small_recipe, tmp_path):
    out = tmp_path / "prepared"
    prepare_data.main(["--config", str(small_recipe), "--output", str(out)])
    with pytest.raises(SystemExit, match="already exists and is not an empty directory"):
        prepare_data.main(["--config", str(small_recipe), "--output", str(out)])
    config = yaml.safe_load(small_recipe.read_text(encoding="utf-8"))
    del config["data"]["val"]
    small_recipe.write_text(yaml.safe_dump(config), encoding="utf-8")
    prepare_data.main(["--config", str(small_recipe), "--output", str(out), "--overwrite"])
    assert _meta(out / "train")["count"] == 40 and not (out / "val").exists()  # no stale val/ left to train on
    mine = tmp_path / "mine"
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "notes.txt").write_text("not prepared data")
    with pytest.raises(SystemExit, match="train exists and was not written by prepare_data.py"):
        prepare_data.main(["--config", str(small_recipe), "--output", str(mine), "--overwrite"])
    assert (mine / "train" / "notes.txt").read_text() == "not prepared data"
