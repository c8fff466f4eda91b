"""``data.prepared``: a folder written by ``scripts/prepare_data.py --output`` trains without the sources, gives what
a normal set-up gives, and refuses a recipe it was not prepared for, naming the field and both values."""

import importlib.util
import json
import shutil

import pytest
import yaml

import lit_align.data.splits as splits
from lit_align.checks import ConfigError
from lit_align.cli import main as lit_align_main
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.run_record import data_summary, read_record

from ..conftest import DEMO_DATA, ROOT, TINY_MODEL

spec = importlib.util.spec_from_file_location("prepare_data", ROOT / "scripts" / "prepare_data.py")
prepare_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_data)

SETTINGS = dict(tokenizer=str(TINY_MODEL), task="preference", max_length=256, batch_size=4)


@pytest.fixture
def sources(tmp_path):
    """Two training files (48 and 32 demo pairs) and a validation file (16), in a folder tests may move away."""
    folder = tmp_path / "sources"
    folder.mkdir()
    train = (DEMO_DATA / "dpo_train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "pairs_a.jsonl").write_text("".join(train[:48]), encoding="utf-8")
    (folder / "pairs_b.jsonl").write_text("".join(train[48:80]), encoding="utf-8")
    val = (DEMO_DATA / "dpo_val.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "held_out.jsonl").write_text("".join(val[:16]), encoding="utf-8")
    return folder


def _train(folder, weight_b=2.0) -> list[DataSource]:
    """``pairs_a`` without a name (named by its file), ``pairs_b`` named ``b`` with a weight."""
    return [
        DataSource(str(folder / "pairs_a.jsonl"), format="preference"),
        DataSource(str(folder / "pairs_b.jsonl"), format="preference", name="b", weight=weight_b),
    ]


def _val(folder) -> list[DataSource]:
    return [DataSource(str(folder / "held_out.jsonl"), format="preference")]


@pytest.fixture
def recipe(tmp_path, sources, monkeypatch):
    """The DPO quickstart on the tiny model, reading ``sources``; run from a scratch folder (logs land there)."""
    monkeypatch.setattr("sys.argv", ["prepare_data.py"])
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((ROOT / "configs" / "quickstart" / "dpo.yaml").read_text())
    config["model"]["init_args"]["model_name_or_path"] = str(TINY_MODEL)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    config["data"]["train"] = [
        {"path": str(s.path), "format": s.format, "name": s.name, "weight": s.weight} for s in _train(sources)
    ]
    config["data"]["val"] = [{"path": str(sources / "held_out.jsonl"), "format": "preference"}]
    config["data"]["batch_size"] = 4
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def prepared(recipe, sources, tmp_path):
    """``(folder, normal)``: the recipe prepared to a folder, and a normal set-up of the same data (made while the
    sources were there); then the sources are moved away."""
    out = tmp_path / "prepared"
    prepare_data.main(["--config", str(recipe), "--output", str(out)])
    normal = AlignDataModule(_train(sources), val=_val(sources), cache=False, **SETTINGS)
    normal.setup()
    sources.rename(tmp_path / "elsewhere")
    return out, normal


def _from(folder, **kwargs) -> AlignDataModule:
    data = AlignDataModule(prepared=str(folder), **{**SETTINGS, **kwargs})
    data.setup()
    return data


def test_prepared_folder_trains_without_the_sources(prepared, monkeypatch):
    folder, normal = prepared
    logged = []
    monkeypatch.setattr(splits, "rank_zero_info", logged.append)
    data = _from(folder)
    assert logged[0].startswith(f"data: train and val from the prepared folder {folder} (80 and 16 examples")
    assert logged[0].endswith("no source was read")
    for split in ("train", "val"):
        mine, theirs = getattr(normal, f"{split}_data"), getattr(data, f"{split}_data")
        assert len(theirs.examples) == len(mine.examples) > 0
        assert list(theirs.examples) == list(mine.examples)  # with the same split and index
        assert list(theirs.records) == list(mine.records)
        assert theirs.reports == mine.reports
    assert [r.name for r in data.train_data.reports] == ["pairs_a", "b"]
    assert data.source_weights() == normal.source_weights() == {"pairs_a": 1.0, "b": 2.0}
    assert data.data_card() == normal.data_card()
    assert data_summary(data) == data_summary(normal)
    assert data.make_train_sampler(2, 1).plan() == normal.make_train_sampler(2, 1).plan()


def test_recipe_sources_absent_here_match_by_name_and_bring_their_weights(prepared, tmp_path):
    folder, normal = prepared
    moved = tmp_path / "elsewhere"
    # Listed in the other order, at paths that do not exist: pairs_a is named by its file name, b by its name.
    cluster = tmp_path / "cluster"
    data = _from(folder, train=list(reversed(_train(cluster, weight_b=5.0))))
    assert data.source_weights() == {"pairs_a": 1.0, "b": 5.0}
    assert list(data.train_data.examples) == list(normal.train_data.examples)
    assert not cluster.exists() and moved.is_dir()


def test_max_val_examples_applies_when_training_from_the_folder(prepared):
    folder, _ = prepared
    assert len(_from(folder, max_val_examples=5).val_data.examples) == 5
    assert len(json.loads((folder / "val" / "meta.json").read_text())["reports"]) == 1


def test_a_val_split_is_optional(recipe, tmp_path):
    config = yaml.safe_load(recipe.read_text())
    del config["data"]["val"]
    recipe.write_text(yaml.safe_dump(config))
    prepare_data.main(["--config", str(recipe), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "val").exists()
    data = _from(tmp_path / "out")
    assert len(data.train_data.examples) == 80 and len(data.val_data.examples) == 0
    with pytest.raises(ConfigError, match="has no val split, but the recipe lists data.val"):
        _from(tmp_path / "out", val=[DataSource("held_out.jsonl")])


def test_settings_that_differ_are_all_named(prepared):
    folder, _ = prepared
    with pytest.raises(ConfigError) as error:
        _from(folder, max_length=200, val_in_train="drop")
    message = str(error.value)
    assert message.startswith(f"data.prepared: {folder / 'train' / 'meta.json'} field settings")
    assert "data.max_length 256 in the folder, 200 in the recipe" in message
    assert "data.val_in_train 'warn' in the folder, 'drop' in the recipe" in message
    assert "data.bucket_bounds [256] in the folder, [200] in the recipe" in message
    assert "Re-run scripts/prepare_data.py" in message


def test_another_tokenizer_is_refused_but_the_same_one_elsewhere_is_not(prepared, tmp_path):
    folder, normal = prepared
    copy = tmp_path / "tokenizer_copy"
    copy.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY_MODEL / name, copy / name)
    assert list(_from(folder, tokenizer=str(copy)).train_data.examples) == list(normal.train_data.examples)
    template = copy / "chat_template.jinja"
    template.write_text("{# v2 #}" + template.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        _from(folder, tokenizer=str(copy))
    message = str(error.value)
    assert (
        "field tokenizer: the folder was prepared with another tokenizer (files chat_template.jinja: 201 bytes"
        in message
    )
    assert "in the folder, 209 bytes" in message  # 8 more: the comment
    assert 'in the folder, "{# v2 #}{% for message' in message and "tokenizer.json" not in message


def test_another_transformers_version_only_warns(prepared):
    folder, _ = prepared
    for split in ("train", "val"):
        path = folder / split / "meta.json"
        meta = json.loads(path.read_text())
        meta["tokenizer"]["transformers"] = "4.0.0"
        path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="tokenised under transformers 4.0.0"):
        assert len(_from(folder).train_data.examples) == 80


def test_source_names_must_match(prepared, tmp_path):
    folder, _ = prepared
    renamed = [DataSource("x/pairs_a.jsonl"), DataSource("x/pairs_b.jsonl")]  # b was prepared as `b`
    with pytest.raises(ConfigError) as error:
        _from(folder, train=renamed)
    assert "field sources: the folder's train sources are named ['pairs_a', 'b']" in str(error.value)
    assert "data.train in the recipe names ['pairs_a', 'pairs_b']" in str(error.value)


def test_not_a_prepared_folder(tmp_path, prepared):
    folder, _ = prepared
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a prepared-data folder: .*train/meta.json does not exist"):
        _from(tmp_path / "empty")
    with pytest.raises(ConfigError, match="it holds one split: give the folder above it"):
        _from(folder / "train")
    with pytest.raises(ConfigError, match="data.prepared: no such folder"):
        _from(tmp_path / "missing")
    path = folder / "train" / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 0}))
    with pytest.raises(ConfigError, match="field version: the folder was written for data version 0"):
        _from(folder)


def test_a_damaged_copy_names_its_folder(prepared):
    folder, _ = prepared
    arrow = folder / "train" / "examples.arrow"
    arrow.write_bytes(arrow.read_bytes()[:100])  # a copy cut short
    damaged = r"data.prepared: .*prepared/train is incomplete or damaged \(examples.arrow has 100 bytes"
    with pytest.raises(ConfigError, match=damaged):
        _from(folder)


def test_neither_train_nor_prepared():
    with pytest.raises(ConfigError, match="data.train: no training data.*data.prepared"):
        AlignDataModule(**SETTINGS)


@pytest.mark.slow
def test_fit_from_a_prepared_folder_without_the_sources(prepared, recipe, tmp_path, monkeypatch):
    """The recipe still lists its sources (absent here, as on a cluster); ``--data.prepared`` trains from the folder."""
    folder, normal = prepared
    args = ["fit", "--config", str(recipe), "--data.prepared", str(folder), "--trainer.max_steps", "2",
            "--trainer.val_check_interval", "2", "--validate_before_training", "false", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks", "[]", "--data.max_val_examples", "4"]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["lit_align", *args])
    logged = []  # caught at the call: another test may stop Lightning's logger from reaching caplog
    monkeypatch.setattr(splits, "rank_zero_info", lambda message: logged.append(message))
    lit_align_main(args)
    assert any(line.startswith(f"data: train and val from the prepared folder {folder}") for line in logged)
    record = read_record(tmp_path / "run" / "run.json")
    assert (record["status"], record["global_step"]) == ("finished", 2)
    assert record["data"]["train"] == data_summary(normal)["train"]  # run.json's digest of what was trained on
    assert record["data"]["val"]["examples"] == 4
