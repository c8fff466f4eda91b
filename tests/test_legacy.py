"""Checkpoints written before losses were objects: their hyper-parameters upgraded, and one resumed for real."""

import pytest
import torch

from lit_align.cli import main
from lit_align.legacy import upgrade_hparams
from lit_align.tensorboard import read_scalars

from .conftest import ROOT

COMMON = {
    "model_name_or_path": "assets/tiny-chat",
    "reference": "auto",
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear", "modules_to_save": []},
    "on_nonfinite_loss": "stop",
}
DPO_DEFAULTS = {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0, "simpo_gamma": 0.5}
DPO_DEFAULTS |= {"length_penalty": 0.0, "rpo_alpha": 0.0}
# As the quickstarts' checkpoints of the previous version stored them (read from their last.ckpt).
OLD_BETA_DPO = {
    "_class_path": "lit_align.modules.beta_dpo.BetaDPOModule",
    "beta_rule": {
        "class_path": "lit_align.losses.beta_rules.BatchAdaptiveBeta",
        "init_args": {"beta": 0.1, "alpha": 0.5, "keep_fraction": 0.8, "momentum": 0.9},
    },
    **DPO_DEFAULTS,
    **COMMON,
}


def test_dpo_module_becomes_preference_module_with_its_dpo_loss():
    old = {"_class_path": "lit_align.modules.DPOModule", **DPO_DEFAULTS, "beta": 0.3, "loss_type": "ipo", **COMMON}
    new = upgrade_hparams(old)
    assert new == {
        "_class_path": "lit_align.modules.PreferenceModule",
        "loss": {
            "class_path": "lit_align.losses.DPOLoss",
            "init_args": {**DPO_DEFAULTS, "beta": 0.3, "loss_type": "ipo"},
        },
        **COMMON,
    }
    assert old["beta"] == 0.3 and "loss" not in old  # the checkpoint's dict is left alone


def test_orpo_and_beta_dpo_keep_their_own_arguments():
    orpo = {"_class_path": "lit_align.modules.orpo.ORPOModule", "lam": 0.25, "nll_on_prompt": False, **DPO_DEFAULTS}
    assert upgrade_hparams({**orpo, **COMMON})["loss"] == {
        "class_path": "lit_align.losses.ORPOLoss",
        "init_args": {"lam": 0.25, "nll_on_prompt": False},
    }
    new = upgrade_hparams(OLD_BETA_DPO)
    assert new["_class_path"] == "lit_align.modules.PreferenceModule" and "beta_rule" not in new
    assert new["loss"] == {
        "class_path": "lit_align.losses.BetaDPOLoss",
        "init_args": {
            "beta": 0.1,
            "label_smoothing": 0.0,
            "rule": {
                "class_path": "lit_align.losses.beta_rules.BatchAdaptiveBeta",
                "init_args": {"alpha": 0.5, "keep_fraction": 0.8, "momentum": 0.9},
            },
        },
    }


def test_guided_module_moves_alpha_into_the_loss_and_drops_the_guidance_text():
    old = {
        "_class_path": "lit_align.modules.preference_guided.PreferenceGuidedDPOModule",
        "guidance": "text",
        "guidance_text": "Answer in the user's language.",
        "alpha": 0.02,
        **DPO_DEFAULTS,
        **COMMON,
    }
    new = upgrade_hparams(old)
    assert new["_class_path"] == old["_class_path"] and new["guidance"] == "text" and "guidance_text" not in new
    expected = {"alpha": 0.02, **{k: v for k, v in DPO_DEFAULTS.items() if k != "simpo_gamma"}}
    assert new["loss"] == {"class_path": "lit_align.losses.PreferenceGuidedLoss", "init_args": expected}


def test_todays_hyper_parameters_are_left_as_they_are():
    today = {"_class_path": "lit_align.modules.PreferenceModule", **COMMON}
    assert upgrade_hparams(today) is today
    assert upgrade_hparams({"_class_path": "lit_align.modules.SFTModule", **COMMON})["_class_path"].endswith(
        "SFTModule"
    )


@pytest.mark.slow
def test_an_old_beta_dpo_checkpoint_resumes_with_its_loss_and_rule_state(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    common = ["--config", "configs/beta_dpo/quickstart.yaml", "--trainer.val_check_interval", "2",
              "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
              "--data.max_val_examples", "16", "--trainer.callbacks", "[]"]  # fmt: skip
    main(["fit", *common, "--trainer.max_steps", "2", f"--trainer.logger.init_args.save_dir={tmp_path / 'new'}"])
    # Rewrite the checkpoint as the previous version wrote it: old hyper-parameters, the rule's state at
    # beta_rule.*, and a running margin mean of 123 that no fresh rule could have.
    path = next((tmp_path / "new").glob("*/version_0/checkpoints/last.ckpt"))
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    state = checkpoint["state_dict"]
    state["beta_rule.margin_mean"], state["beta_rule.margin_std"] = (
        torch.tensor(123.0),
        state.pop("loss.rule.margin_std"),
    )
    del state["loss.rule.margin_mean"]
    checkpoint["hyper_parameters"] = {**OLD_BETA_DPO, "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    main(["fit", *common, "--trainer.max_steps", "3", f"--ckpt_path={old}",
          f"--trainer.logger.init_args.save_dir={tmp_path / 'resumed'}"])  # fmt: skip
    run = next((tmp_path / "resumed").glob("*/version_0"))
    # One step with momentum 0.9 from 123: 0.9 * 123 + 0.1 * mean(margins) = 110.7 + a margin mean of order 1.
    ((step, ema_mean),) = read_scalars(run)["train/margin/ema_mean"]
    assert step == 2 and 105 < ema_mean < 116
    config = (run / "config.yaml").read_text()
    assert (
        "lit_align.losses.BetaDPOLoss" in config and "alpha: 0.5" in config
    )  # the old run's alpha, not the recipe's 0.6
