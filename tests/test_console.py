"""A clean run's console is the progress bar and lit_align's own lines (issue 11, item 22)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
NOISE = [
    "Setting accelerator to CPU",  # DeepSpeed's import
    "gemm_4bit_forward",  # bitsandbytes' import, with no 4-bit model in the run
    "Tip: For seamless cloud logging",  # Lightning's litlogger advertisement
    "is_gradient_checkpointing",  # PEFT's call into transformers 5
    "LeafSpec",  # Lightning's call into torch
    "Consider using tensor.detach() first",
    "Loading weights",
    "Writing model shards",
]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=True
    )


def test_the_command_imports_neither_deepspeed_nor_bitsandbytes():
    result = _python(
        "import sys, lit_align.cli, lit_align.modules, lit_align.strategies\n"
        "print(sorted(m for m in ('deepspeed', 'bitsandbytes') if m in sys.modules))"
    )
    assert result.stdout.strip() == "[]"
    assert "Setting accelerator" not in result.stderr


def test_a_lora_model_without_quantization_prints_no_library_notice():
    result = _python(
        "from lit_align.console import quiet_library_notices\n"
        "quiet_library_notices()\n"
        "from lit_align.models.loading import LoraSettings\n"
        "from lit_align.modules import PreferenceModule\n"
        "module = PreferenceModule('assets/tiny-chat', lora=LoraSettings())\n"
        "module.configure_model()\n"
        "print('built')"
    )
    assert result.stdout.strip() == "built"
    for notice in NOISE:
        assert notice not in result.stderr, result.stderr


@pytest.mark.slow
def test_the_quickstart_console_is_the_bar_and_our_lines(tmp_path):
    command = [
        sys.executable, "-m", "lit_align", "fit", "--config", "configs/quickstart/dpo.yaml",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
        "--data.max_val_examples=16",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for notice in NOISE:
        assert notice not in result.stderr, notice
    assert "Warning" not in result.stderr, result.stderr
    assert "LoRA: 77,824 trainable" in result.stderr and "Hugging Face export written to" in result.stderr
    assert "Epoch 0" in result.stdout  # the bar is there...
    assert "/-2" not in result.stdout and "v_num" not in result.stdout  # ...without a bogus epoch count or v_num


def test_our_gradient_checkpointing_call_is_not_deprecated():
    import warnings

    from lit_align.models.loading import enable_gradient_checkpointing, load_causal_lm

    model = load_causal_lm(str(ROOT / "assets" / "tiny-chat"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        enable_gradient_checkpointing(model)
    assert model.is_activation_checkpointing
