"""Every shipped YAML parses with the CLI, and every module imports."""

import importlib
import pkgutil
from pathlib import Path

import pytest
import yaml

import lit_align
from lit_align.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "strategy" and "eval" not in p.parts)
EVAL_CONFIGS = sorted((ROOT / "configs" / "eval").glob("*.yaml"))
EVAL_TASKS = sorted((ROOT / "configs" / "eval" / "tasks").glob("*.yaml"))
FRAGMENTS = sorted((ROOT / "callbacks").glob("*.yaml")) + sorted((ROOT / "configs" / "strategy").glob("*.yaml"))
QUICKSTART_SFT = ROOT / "configs" / "quickstart" / "sft.yaml"


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit_align"])


def test_there_are_recipes_and_fragments():
    assert {p.parent.name for p in RECIPES} >= {"quickstart", "sft", "dpo"}
    assert FRAGMENTS


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path: lit_align.modules." in capsys.readouterr().out


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=lambda p: p.name)
def test_callback_fragment_parses_on_top_of_a_recipe(fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(QUICKSTART_SFT), "--config", str(fragment), "--print_config"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    settings = yaml.safe_load(fragment.read_text(encoding="utf-8"))
    for class_path in _class_paths(settings):
        assert f"class_path: {class_path}" in out
    if "callbacks+" in settings.get("trainer", {}):
        assert "class_path: lit_align.callbacks.TokenThroughput" in out  # appended: the recipe's own are kept


@pytest.mark.parametrize("config", EVAL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_eval_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["tasks"] and printed["model"]["path"]


def test_every_eval_task_yaml_is_a_task_lm_eval_reads():
    from lm_eval.tasks._yaml_loader import load_yaml

    from lit_align.evaluation.tasks import local_task_files

    assert {"demo_choice", "gsm8k_local", "gsm8k_chat"} <= set(local_task_files(str(ROOT / "configs/eval/tasks")))
    for path in EVAL_TASKS:
        config = load_yaml(path, resolve_func=True)  # resolves `!function utils.*`: the file imports
        assert config["task"] == path.stem and config["metric_list"], path


def _class_paths(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["class_path"]] if "class_path" in node else []
        return own + [p for value in node.values() for p in _class_paths(value)]
    if isinstance(node, list):
        return [p for value in node for p in _class_paths(value)]
    return []


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(lit_align.__path__, "lit_align.") if m.name != "lit_align.__main__"]
    assert "lit_align.modules.preference" in names and "lit_align.losses.beta_dpo" in names
    for name in names:
        importlib.import_module(name)
