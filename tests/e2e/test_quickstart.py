"""End to end: `lit_align fit` on the quickstart recipes, as a user runs it, for a few steps on CPU."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_align.tensorboard import read_scalars

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _fit(recipe: str, save_dir: Path, *overrides: str) -> Path:
    """Run `lit_align fit` in a subprocess from the repository root; return the run's log directory."""
    command = [
        sys.executable, "-m", "lit_align", "fit",
        "--config", str(ROOT / recipe),
        f"--trainer.logger.init_args.save_dir={save_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        *overrides,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    runs = sorted(p for p in save_dir.glob("*/version_*") if p.is_dir())
    return runs[-1]


def _generate(model, tokenizer, text: str) -> str:
    messages = [{"role": "user", "content": text}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_sft_quickstart(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = _fit(
        "configs/quickstart/sft.yaml", tmp_path,
        "--trainer.max_steps=30", "--trainer.val_check_interval=15", "--data.max_val_examples=64",
    )  # fmt: skip
    scalars = read_scalars(run)
    losses = [v for _, v in scalars["train/loss"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses
    val_loss, val_ppl = scalars["val/loss"][-1][1], scalars["val/ppl"][-1][1]
    assert val_ppl == pytest.approx(math.exp(val_loss), rel=1e-4)
    assert scalars["train/lr"][0][1] > 0
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()

    # The export is a full model that transformers loads as it is, with changed weights, and it generates.
    exported = AutoModelForCausalLM.from_pretrained(run / "hf")
    original = AutoModelForCausalLM.from_pretrained(ROOT / "assets" / "tiny-chat")
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(exported.state_dict()[name], original.state_dict()[name])
    tokenizer = AutoTokenizer.from_pretrained(run / "hf")
    assert isinstance(_generate(exported, tokenizer, "What is 2 plus 3?"), str)


def test_dpo_quickstart_and_resume(tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    run = _fit(
        "configs/quickstart/dpo.yaml", tmp_path,
        "--trainer.max_steps=24", "--trainer.val_check_interval=24", "--data.max_val_examples=48",
    )  # fmt: skip
    scalars = read_scalars(run)
    # Step 0: the LoRA update starts at zero, so policy == reference and the loss is exactly log 2.
    first_step, first_loss = scalars["train/loss"][0]
    assert first_step == 0 and first_loss == pytest.approx(math.log(2), abs=1e-5)
    # The recipe validates before training: at step 0 every reward is 0, so accuracy (strict >) is 0.
    assert scalars["val/loss"][0] == (0, pytest.approx(math.log(2), abs=1e-5))
    assert scalars["val/rewards/accuracies"][0] == (0, 0.0)
    last_losses = [v for _, v in scalars["train/loss"][-6:]]
    assert sum(last_losses) / 6 < math.log(2) - 0.05, scalars["train/loss"]
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen"):
        assert f"train/{name}" in scalars and f"val/{name}" in scalars, name
    assert scalars["val/rewards/margins"][-1][1] > 0 and scalars["val/rewards/accuracies"][-1][1] > 0.5

    # Checkpoints hold what trains (the adapter), not the frozen base, and load with weights_only=True.
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])

    # The adapter export loads with PEFT alone; its LoRA B matrices moved away from their zero init.
    model = AutoPeftModelForCausalLM.from_pretrained(run / "hf")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    assert isinstance(_generate(model, AutoTokenizer.from_pretrained(run / "hf"), "天空是什么颜色？"), str)

    # Resuming from the last checkpoint continues the step count, in the same run folder (one curve).
    resumed = _fit(
        "configs/quickstart/dpo.yaml", tmp_path,
        "--trainer.max_steps=28", "--trainer.val_check_interval=24", "--data.max_val_examples=48",
        f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
    )  # fmt: skip
    steps = [s for s, _ in read_scalars(resumed)["train/loss"]]
    assert resumed == run and steps == list(range(28))
