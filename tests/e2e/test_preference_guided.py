"""End to end: `lit_align fit` on the preference-guided quickstarts (text and soft prompt), a few steps on CPU."""

import math
import subprocess
import sys

import pytest
import torch

from lit_align.tensorboard import read_scalars

from .test_quickstart import ROOT, _fit

pytestmark = pytest.mark.slow
SHORT = ("--trainer.max_steps=6", "--trainer.val_check_interval=6", "--data.max_val_examples=16")


def test_text_quickstart(tmp_path):
    run = _fit("configs/preference_guided/quickstart.yaml", tmp_path, *SHORT)
    scalars = read_scalars(run)
    # Step 0: policy == reference on the guided input, so the DPO part is log 2; the consistency term is not 0.
    step, dpo = scalars["train/loss_components/dpo_loss"][0]
    assert step == 0 and dpo == pytest.approx(math.log(2), abs=1e-5)
    assert scalars["train/loss_components/aligned_loss"][0][1] > 0
    assert {"val/rewards/accuracies", "val/preference_metrics/pref_advantage_ratio"} <= set(scalars)
    assert (run / "hf" / "adapter_model.safetensors").is_file()


def test_embedding_quickstart_with_a_script_made_soft_prompt(tmp_path):
    soft_prompt = tmp_path / "soft_prompt.pt"
    command = [
        sys.executable, str(ROOT / "scripts" / "make_soft_prompt.py"), "--model", str(ROOT / "assets" / "tiny-chat"),
        "--n-tokens", "8", "--output", str(soft_prompt), "--init-text", "Answer in the user's language.",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    start = torch.load(soft_prompt, weights_only=True)
    run = _fit(
        "configs/preference_guided/quickstart_embedding.yaml",
        tmp_path / "logs",
        f"--model.init_args.soft_prompt_path={soft_prompt}",
        *SHORT,
    )
    scalars = read_scalars(run)
    assert scalars["train/loss_components/dpo_loss"][0][1] == pytest.approx(math.log(2), abs=1e-5)
    trained = torch.load(run / "hf" / "soft_prompt.pt", weights_only=True)
    assert trained.shape == start.shape and not torch.equal(trained, start)  # P-tuning moved it
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(checkpoint["state_dict"]["soft_prompt"], trained)
