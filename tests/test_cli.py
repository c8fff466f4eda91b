"""The command's own behaviour: parse errors a person can act on (issue 11, item 13)."""

from pathlib import Path

import pytest

from lit_align.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_DPO = str(ROOT / "configs" / "quickstart" / "dpo.yaml")


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lit_align"])


def _parse_error(capsys, *args: str, command: str = "fit") -> list[str]:
    """stderr lines of a run that must stop at parsing with exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--config", QUICKSTART_DPO, *args, "--print_config"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert not any(line.startswith("usage:") for line in lines), captured.err  # no 60 lines of usage
    assert "NoneType" not in captured.err  # nor the optional None branch jsonargparse also tried
    return lines


def test_a_misspelled_loss_argument_is_one_error_with_a_suggestion(capsys):
    lines = _parse_error(capsys, "--model.init_args.loss.init_args.betta", "0.2")
    assert lines[0] == (
        "error: model.init_args.loss.init_args.betta: lit_align.losses.DPOLoss has no argument 'betta'; "
        "did you mean `beta`?"
    )
    assert lines[1] == "  accepted: beta, loss_type, label_smoothing, simpo_gamma, length_penalty, rpo_alpha"
    assert lines[2] == (
        "  help: lit_align fit --model lit_align.modules.PreferenceModule "
        "--model.init_args.loss.help lit_align.losses.DPOLoss"
    )
    assert len(lines) == 3


def test_a_misspelled_key_in_yaml_gets_the_same_error(capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path(QUICKSTART_DPO).read_text(encoding="utf-8").replace("beta: 0.1", "betta: 0.1"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("error: model.init_args.loss.init_args.betta: ") and first.endswith("did you mean `beta`?")


def test_the_suggested_help_command_works(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "lit_align.modules.PreferenceModule", "--model.init_args.loss.help",
              "lit_align.losses.DPOLoss"])  # fmt: skip
    assert exit_info.value.code in (0, None)
    assert "--loss.beta BETA" in capsys.readouterr().out


def test_a_wrong_type_is_one_error(capsys):
    assert _parse_error(capsys, "--trainer.max_steps", "abc") == [
        "error: trainer.max_steps: expected int, got 'abc'",
        "  help: lit_align fit --help",
    ]


def test_a_wrong_type_nested_in_a_class_names_the_full_key(capsys):
    lines = _parse_error(capsys, "--model.init_args.loss.init_args.beta", "abc")
    assert lines[0] == "error: model.init_args.loss.init_args.beta: expected float, got 'abc'"


def test_a_wrong_choice_suggests_the_closest(capsys):
    lines = _parse_error(capsys, "--model.init_args.lr_schedule.kind", "cosin")
    assert lines[0] == (
        "error: model.init_args.lr_schedule.kind: expected one of 'cosine', 'linear', 'constant', got 'cosin'; "
        "did you mean `cosine`?"
    )


def test_a_misspelled_dataclass_field_has_no_init_args_in_its_key(capsys):
    lines = _parse_error(capsys, "--model.init_args.lora.rr", "8")
    assert lines[0] == (
        "error: model.init_args.lora.rr: lit_align.models.LoraSettings has no argument 'rr'; did you mean `r`?"
    )


def test_a_misspelled_optimizer_argument(capsys):
    lines = _parse_error(capsys, "--model.init_args.optimizer.init_args.lrr", "0.1")
    assert lines[0] == (
        "error: model.init_args.optimizer.init_args.lrr: torch.optim.AdamW has no argument 'lrr'; did you mean `lr`?"
    )
    assert "params" not in lines[1]  # the module fills it in


def test_a_misspelled_top_level_option(capsys):
    assert _parse_error(capsys, "--data.batch_sise", "4") == [
        "error: data.batch_sise: no such option; did you mean `--data.batch_size`?",
        "  help: lit_align fit --help",
    ]


def test_the_help_line_names_the_subcommand_that_failed(capsys):
    assert _parse_error(capsys, "--data.batch_sise", "4", command="validate") == [
        "error: data.batch_sise: no such option; did you mean `--data.batch_size`?",
        "  help: lit_align validate --help",
    ]
    lines = _parse_error(capsys, "--model.init_args.lossx", "1", command="validate")
    assert lines[-1] == "  help: lit_align validate --model.help lit_align.modules.PreferenceModule"


def test_a_class_path_that_does_not_import(capsys):
    lines = _parse_error(capsys, "--model.init_args.loss.class_path", "lit_align.losses.DPOLos")
    assert lines[0] == (
        "error: model.init_args.loss.class_path: lit_align.losses has no class 'DPOLos'; did you mean `DPOLoss`?"
    )


def test_a_bad_record_stops_the_run_with_its_message_alone(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "hello"}\n', encoding="utf-8")  # no rejected answer
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["fit", "--config", QUICKSTART_DPO, f"--data.train=[{{path: {bad}, format: preference}}]",
             f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", "--trainer.enable_progress_bar=false"]
        )  # fmt: skip
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {bad}:1: field 'rejected': missing" in err and "Traceback" not in err
    monkeypatch.setenv("LIT_ALIGN_TRACEBACK", "1")  # and the traceback is there for whoever wants it
    with pytest.raises(ValueError, match="field 'rejected'"):
        main(
            ["fit", "--config", QUICKSTART_DPO, f"--data.train=[{{path: {bad}, format: preference}}]",
             f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}", "--trainer.enable_progress_bar=false"]
        )  # fmt: skip


def test_a_loss_refusing_its_settings_is_one_line_naming_the_loss(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART_DPO, "--model.init_args.loss.init_args.label_smoothing", "0.7",
              f"--trainer.logger.init_args.save_dir={tmp_path}"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: DPOLoss: label_smoothing must be in [0, 0.5), got 0.7" in err and "Traceback" not in err
