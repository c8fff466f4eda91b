"""Every shipped YAML parses with the CLI, and every module imports."""

import importlib
import pkgutil
from pathlib import Path

import pytest

import lit_align
from lit_align.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").rglob("*.yaml"))
FRAGMENTS = sorted((ROOT / "callbacks").glob("*.yaml"))
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
    assert "class_path: lightning.pytorch.callbacks" in capsys.readouterr().out


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(lit_align.__path__, "lit_align.") if m.name != "lit_align.__main__"]
    assert "lit_align.modules.dpo" in names
    for name in names:
        importlib.import_module(name)
