"""End to end: `lit_align fit` from a GGUF file (``--model.init_args.gguf_file``), as a user runs it, on CPU.

The run converts the file into its own cache directory (``LIT_ALIGN_CACHE``), trains a LoRA adapter with DPO for
two steps and exports ``hf/``, whose adapter names the converted directory as its base model.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_align.models.gguf import file_hash

from ..conftest import SMOLLM2_DIR, SMOLLM2_GGUF, needs_smollm2
from ..models.test_gguf import TINY_GGUF, write_tiny_gguf

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _fit(
    model_dir: Path, gguf_file: str, tmp_path: Path, *overrides: str, cache: Path | None = None
) -> tuple[Path, str]:
    """DPO steps of the quickstart recipe on ``gguf_file``: the run's folder and what it printed."""
    command = [
        sys.executable, "-m", "lit_align", "fit",
        "--config", str(ROOT / "configs" / "quickstart" / "dpo.yaml"),
        f"--model.init_args.model_name_or_path={model_dir}",
        f"--model.init_args.gguf_file={gguf_file}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--trainer.val_check_interval=2",
        "--data.max_val_examples=4",
        "--data.max_length=64",
        "--data.max_truncated_fraction=1.0",  # short rows keep the steps fast; cut answers do not matter here
        "--data.batch_size=2",
        *overrides,
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LIT_ALIGN_CACHE": str(cache or tmp_path / "c"),
    }
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return sorted(p for p in (tmp_path / "logs").glob("*/version_*") if p.is_dir())[-1], output


def _check_export(run: Path, converted: Path) -> None:
    """``hf/`` is a LoRA adapter on the converted directory that PEFT loads, with trained (non-zero) B matrices."""
    from peft import AutoPeftModelForCausalLM

    adapter = json.loads((run / "hf" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["base_model_name_or_path"] == str(converted)
    model = AutoPeftModelForCausalLM.from_pretrained(run / "hf")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)


def test_fit_from_a_tiny_gguf_and_resume(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_tiny_gguf(model_dir / TINY_GGUF)
    converted = tmp_path / "c" / "gguf" / file_hash(model_dir / TINY_GGUF)

    run, output = _fit(model_dir, TINY_GGUF, tmp_path, "--trainer.max_steps=2")
    assert f"cached at {converted}" in output
    _check_export(run, converted)
    # The run's config holds what the user wrote, so a resume resolves the same file again (from the cache).
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["model"]["init_args"]
    assert (config["model_name_or_path"], config["gguf_file"]) == (str(model_dir), TINY_GGUF)

    resumed, output = _fit(
        model_dir, TINY_GGUF, tmp_path, "--trainer.max_steps=3", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    )
    assert resumed == run and "converting" not in output


@needs_smollm2
def test_fit_lora_dpo_on_smollm2_gguf(tmp_path, smollm2_cache):
    """On the session's conversion (the conversion itself is tested in tests/models/test_gguf.py)."""
    cache, converted = smollm2_cache
    run, output = _fit(SMOLLM2_DIR, SMOLLM2_GGUF, tmp_path, "--trainer.max_steps=2", cache=cache)
    assert "converting" not in output
    _check_export(run, converted)
