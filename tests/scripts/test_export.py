"""scripts/export.py: a LoRA run merged into a plain model that generates exactly as base + adapter does."""

import importlib.util

import pytest
import torch
from safetensors.torch import load_file

from lit_align.cli import main as lit_align_main

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("export", ROOT / "scripts" / "export.py")
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)

PROMPTS = ["What is 7 plus 8?", "天空是什么颜色？", "Name a colour."]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("logs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        patch.setattr("sys.argv", ["lit_align"])
        lit_align_main(
            [
                "fit", "--config", "configs/quickstart/dpo.yaml",
                "--trainer.max_steps=6", "--trainer.val_check_interval=6", "--data.max_val_examples=16",
                "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={save_dir}",
            ]
        )  # fmt: skip
    return next(save_dir.glob("quickstart-dpo/version_*"))


def _greedy(model, tokenizer):
    outputs = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            outputs.append(model.generate(ids, max_new_tokens=16, do_sample=False)[0].tolist())
    return outputs


@pytest.mark.slow
def test_merged_export_generates_like_base_plus_adapter(lora_run, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export.main(["--checkpoint", str(lora_run / "hf"), "--merge", "--output", str(tmp_path / "merged")])
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    adapted = AutoPeftModelForCausalLM.from_pretrained(lora_run / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert _greedy(merged, tokenizer) == _greedy(adapted, tokenizer)

    # From the Lightning checkpoint (config.yaml beside it says which model): the same merged weights.
    export.main(
        ["--checkpoint", str(lora_run / "checkpoints" / "last.ckpt"), "--merge", "--output", str(tmp_path / "m2")]
    )
    a, b = load_file(tmp_path / "merged" / "model.safetensors"), load_file(tmp_path / "m2" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_default_output_is_in_the_run_and_is_never_overwritten_silently(lora_run):
    export.main(["--checkpoint", str(lora_run / "hf"), "--merge"])
    assert (lora_run / "merged" / "model.safetensors").is_file()
    with pytest.raises(SystemExit, match="already exists and is not an empty directory"):
        export.main(["--checkpoint", str(lora_run / "hf"), "--merge"])
    export.main(["--checkpoint", str(lora_run / "hf"), "--merge", "--overwrite"])
    export.main(["--checkpoint", str(lora_run / "hf")])  # the adapter as it is, beside the merged model
    assert (lora_run / "exported" / "adapter_config.json").is_file()
