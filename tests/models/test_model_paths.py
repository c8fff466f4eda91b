"""A model or tokenizer path that cannot load is an error at once, naming its setting (issue 11, item 10)."""

from pathlib import Path

import pytest

from lit_align.checks import ConfigError
from lit_align.cli import main
from lit_align.tokenizer import TOKENIZER_FILES, check_model_path

from ..conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[2]
KEY = "model.init_args.model_name_or_path"


def test_a_missing_local_path_is_no_such_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        check_model_path("./models/x", KEY)
    assert str(error.value) == f"{KEY}: no such directory: ./models/x (relative paths start at {tmp_path})"


def test_a_missing_path_under_an_existing_folder_is_local(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no such directory: models/does-not-exist \(relative"):
        check_model_path("models/does-not-exist", KEY)


def test_a_folder_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory without config.json or adapter_config.json"):
        check_model_path(str(tmp_path), KEY)
    with pytest.raises(ConfigError, match=r"without tokenizer_config.json or tokenizer.json"):
        check_model_path(str(tmp_path), "model.init_args.tokenizer_name_or_path", files=TOKENIZER_FILES)
    check_model_path(str(TINY_MODEL), KEY)
    check_model_path(str(TINY_MODEL), KEY, files=TOKENIZER_FILES)


def test_offline_a_hub_name_must_be_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        check_model_path("org/model", KEY)
    message = str(error.value)
    assert message.startswith(f"{KEY}: 'org/model' is not a local directory, the Hugging Face hub is offline")
    assert "(HF_HUB_OFFLINE=1)" in message and f"Point {KEY} at a local copy" in message
    # The same name in the cache (the layout huggingface_hub writes) passes.
    repo = tmp_path / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    check_model_path("org/model", KEY)


def test_an_unreachable_hub_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("lit_align.tokenizer.hub_reachable", lambda: False)
    with pytest.raises(ConfigError, match=r"'org/model' is not a local directory, the hub \(.*\) cannot be reached"):
        check_model_path("org/model", KEY)


def test_the_module_names_the_setting():
    from lit_align.modules import PreferenceModule, SFTModule

    with pytest.raises(ConfigError, match=rf"^{KEY}: no such directory: \./models/x"):
        SFTModule("./models/x")
    with pytest.raises(ConfigError, match=r"^model.init_args.tokenizer_name_or_path: no such directory: \./tok"):
        SFTModule(str(TINY_MODEL), tokenizer_name_or_path="./tok")
    with pytest.raises(ConfigError, match=r"^model.init_args.reference_model_name_or_path: no such directory"):
        PreferenceModule(str(TINY_MODEL), reference="copy", reference_model_name_or_path="./base")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("./models/x", f"error: {KEY}: no such directory: ./models/x"),
        ("models/does-not-exist", f"error: {KEY}: 'models/does-not-exist' is not a local directory, the Hugging"),
    ],
)
def test_the_command_says_it_in_one_line(path, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["lit_align"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest's default; the hub name cannot be fetched in tests
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    recipe = str(ROOT / "configs" / "quickstart" / "sft.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", recipe, "--model.init_args.model_name_or_path", path,
              "--trainer.logger.init_args.save_dir", str(tmp_path)])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in err and "Namespace(" not in err
