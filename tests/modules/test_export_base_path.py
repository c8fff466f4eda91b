"""A LoRA export names its base model as the user gave it, so a run folder or a clone can move (issue 11, item 20)."""

import json
import shutil
from pathlib import Path

import torch

from lit_align.models.loading import LoraSettings
from lit_align.modules import SFTModule

ROOT = Path(__file__).resolve().parents[2]


def _lora_run(model_name_or_path: str, out: Path) -> dict[str, torch.Tensor]:
    """Export an SFT LoRA module whose adapter is not a no-op; return the adapter's weights."""
    module = SFTModule(model_name_or_path, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    module.configure_model()
    adapter = {n: p for n, p in module.policy.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        for value in adapter.values():
            value.fill_(0.01)
    module.export_pretrained(out)
    return {n: p.detach().clone() for n, p in adapter.items()}


def _base_name(hf: Path) -> str:
    return json.loads((hf / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]


def test_the_readme_load_works_from_the_repository_root(tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    monkeypatch.chdir(ROOT)  # where the README's commands run
    hf = tmp_path / "hf"
    trained = _lora_run("assets/tiny-chat", hf)
    assert _base_name(hf) == "assets/tiny-chat"  # as given, not /.../assets/tiny-chat
    loaded = AutoPeftModelForCausalLM.from_pretrained(hf)
    name = next(iter(trained)).replace(".default", "")
    weights = {n.replace(".default", ""): p for n, p in loaded.named_parameters()}
    torch.testing.assert_close(weights[name], trained[next(iter(trained))])


def test_a_moved_clone_still_loads_its_run(tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "assets" / "tiny-chat", clone / "assets" / "tiny-chat")
    monkeypatch.chdir(clone)
    _lora_run("assets/tiny-chat", clone / "logs" / "run" / "hf")
    moved = tmp_path / "moved"
    clone.rename(moved)
    monkeypatch.chdir(moved)
    AutoPeftModelForCausalLM.from_pretrained(moved / "logs" / "run" / "hf")  # an absolute base path would be gone
