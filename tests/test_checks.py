"""Settings that cannot work are refused when the object is built, naming their key (issue 11, item 14)."""

from functools import partial
from pathlib import Path

import pytest
import torch

from lit_align.checks import ConfigError, check_at_least, check_between, check_positive, check_run_length
from lit_align.cli import main
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.optim import LRSchedule, check_optimizer

from .conftest import DEMO_DATA, TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]


def test_the_checks_by_hand():
    check_at_least("k", 1, 1)
    check_at_least("k", None, 1)  # unset
    with pytest.raises(ConfigError, match=r"^k must be an integer >= 1, got 0$"):
        check_at_least("k", 0, 1)
    with pytest.raises(ConfigError, match="got True"):
        check_at_least("k", True, 1)  # a bool is not a count
    check_between("k", 0.0, 0, 1, high_open=True)
    with pytest.raises(ConfigError, match=r"^k must be in \[0, 1\), got 1.0$"):
        check_between("k", 1.0, 0, 1, high_open=True)
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\], got nan"):
        check_between("k", float("nan"), 0, 1)
    check_positive("lr", 1e-9)
    for bad in (0, -1e-5, float("inf")):
        with pytest.raises(ConfigError, match="lr must be a number > 0"):
            check_positive("lr", bad)
    check_run_length(-1, None)
    check_run_length(5, -1)
    with pytest.raises(ConfigError, match=r"^trainer.max_steps must be at least 1 .*got 0: the run would train"):
        check_run_length(0, None)
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs must be at least 1"):
        check_run_length(-1, 0)


def _data(**kwargs) -> AlignDataModule:
    source = DataSource(str(DEMO_DATA / "dpo_val.jsonl"))
    return AlignDataModule([source], tokenizer=str(TINY_MODEL), task="preference", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "data.batch_size must be an integer >= 1, got 0"),
        ({"eval_batch_size": 0}, "data.eval_batch_size must be an integer >= 1, got 0"),
        ({"max_length": 0}, "data.max_length must be an integer >= 1, got 0 (tokens per sequence)"),
        ({"max_val_examples": 0}, "data.max_val_examples must be an integer >= 1, got 0"),
        ({"num_workers": -1}, "data.num_workers must be an integer >= 0, got -1"),
        ({"max_length": 64, "max_prompt_length": 64}, "data.max_prompt_length (64) must be below data.max_length (64)"),
        ({"target_zh_share": 1.5}, "data.target_zh_share must be in [0, 1], got 1.5"),
        ({"min_zh_ratio": -0.1}, "data.min_zh_ratio must be in [0, 1], got -0.1"),
        ({"bucket_bounds": [0, 256]}, "data.bucket_bounds[...] must be an integer >= 1, got 0"),
        ({"pad_to_multiple_of": 0}, "data.pad_to_multiple_of must be an integer >= 1, got 0"),
    ],
)
def test_the_data_module_refuses_sizes_that_cannot_work(kwargs, message):
    with pytest.raises(ConfigError) as error:
        _data(**kwargs)
    assert str(error.value).startswith(message)


def test_sensible_data_settings_pass():
    _data(batch_size=1, max_length=1, max_val_examples=1, num_workers=0, target_zh_share=0.7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup_ratio": 1.0}, "model.init_args.lr_schedule.warmup_ratio must be in [0, 1), got 1.0"),
        ({"warmup_ratio": -0.1}, "model.init_args.lr_schedule.warmup_ratio must be in [0, 1), got -0.1"),
        ({"warmup_steps": -1}, "model.init_args.lr_schedule.warmup_steps must be an integer >= 0, got -1"),
        ({"min_lr_ratio": 2.0}, "model.init_args.lr_schedule.min_lr_ratio must be in [0, 1], got 2.0"),
        ({"kind": "exp"}, "model.init_args.lr_schedule.kind must be cosine, linear or constant, got 'exp'"),
    ],
)
def test_the_schedule_refuses_values_that_cannot_work(kwargs, message):
    with pytest.raises(ConfigError) as error:
        LRSchedule(**kwargs)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("lr", [0.0, -1e-5, float("nan")])
def test_the_optimizer_needs_a_positive_learning_rate(lr):
    with pytest.raises(ConfigError, match=r"^model.init_args.optimizer.init_args.lr must be a number > 0"):
        check_optimizer(partial(torch.optim.AdamW, lr=lr))


def test_torch_own_checks_run_at_construction():
    with pytest.raises(ConfigError, match=r"^model.init_args.optimizer.init_args: AdamW refuses .*weight_decay"):
        check_optimizer(partial(torch.optim.AdamW, lr=1e-3, weight_decay=-1.0))
    check_optimizer(torch.optim.AdamW)  # the default: a class, its own lr
    check_optimizer(partial(torch.optim.SGD, lr=0.1, momentum=0.9))


def test_the_module_checks_its_optimizer_before_loading_anything():
    from lit_align.modules.sft import SFTModule

    with pytest.raises(ConfigError, match="lr must be a number > 0"):
        SFTModule(str(TINY_MODEL), optimizer=partial(torch.optim.AdamW, lr=-1.0))


@pytest.fixture
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit_align"])


@pytest.mark.usefixtures("_plain_argv")
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--model.init_args.optimizer.init_args.lr", "-1"], "error: model.init_args.optimizer.init_args.lr must be"),
        (["--data.batch_size", "0"], "error: data.batch_size must be an integer >= 1, got 0"),
        (["--trainer.max_steps", "0"], "error: trainer.max_steps must be at least 1"),
    ],
)
def test_the_command_stops_with_one_line_before_any_loading(override, message, capsys, tmp_path):
    recipe = str(ROOT / "configs" / "quickstart" / "dpo.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", recipe, *override, "--trainer.logger.init_args.save_dir", str(tmp_path),
              "--validate_before_training", "false", "--data.max_val_examples", "16"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and "LoRA:" not in err  # no model loaded
    assert not any(tmp_path.iterdir())  # nothing written
