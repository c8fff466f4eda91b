"""A trained policy back from what a run left: a Lightning checkpoint (rebuilt through the run's ``config.yaml``)
or a ``save_pretrained`` directory (a full model, or a LoRA adapter that names its base model).

Export and evaluation both start from here, so a checkpoint means the same weights to both. A LoRA adapter stays
a ``PeftModel``: evaluating it unmerged gives the numbers of the merged model (tested) without a merge step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class TrainedPolicy:
    model: nn.Module
    tokenizer: object
    global_step: int | None
    """Optimizer steps the weights have taken, when the run says (a checkpoint, or an ``hf/`` export beside its
    run's ``checkpoints/last.ckpt``, which holds the same weights)."""


def run_config_of(checkpoint: Path) -> Path:
    """``<run>/config.yaml`` for ``<run>/checkpoints/<name>.ckpt``; an error that says so when it is missing."""
    config = checkpoint.parent.parent / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(
            f"{checkpoint}: no config.yaml at {config} to say which model this checkpoint belongs to (lit_align "
            "runs write it into their version_N folder; point at the run's hf/ export instead)"
        )
    return config


def load_run_checkpoint(path: str | Path) -> TrainedPolicy:
    """The policy and tokenizer of a lit_align run's Lightning checkpoint, with its trained weights."""
    import yaml

    from lit_align.cli import instantiate

    path = Path(path)
    model_config = yaml.safe_load(run_config_of(path).read_text(encoding="utf-8"))["model"]
    module = instantiate({"model": model_config, "data": {"train": []}, "trainer": {"logger": False}}).model
    module.configure_model()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
    return TrainedPolicy(module.policy, module.tokenizer, checkpoint.get("global_step"))


def load_pretrained_dir(path: str | Path, **from_pretrained) -> TrainedPolicy:
    """A ``save_pretrained`` directory: a full model, or a LoRA adapter on the base its ``adapter_config.json``
    names (loaded from the working directory the run used, as the export's docstring says). ``from_pretrained``
    goes to the model's ``from_pretrained`` (``dtype``, ``trust_remote_code``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_align.tokenizer import TOKENIZER_FILES

    path = Path(path)
    tokenizer_path = path
    if (path / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, **from_pretrained)
        if not any((path / name).is_file() for name in TOKENIZER_FILES):  # an adapter saved without its tokenizer
            tokenizer_path = model.peft_config["default"].base_model_name_or_path
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained)
    trust = from_pretrained.get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=trust)
    return TrainedPolicy(model, tokenizer, export_step(path))


def export_step(hf_dir: Path) -> int | None:
    """The global step of a run's ``hf/`` export: its run's ``checkpoints/last.ckpt`` holds the same weights
    (written at the same final step). Read memory-mapped, so only the small header is touched."""
    last = hf_dir.parent / "checkpoints" / "last.ckpt"
    if hf_dir.name != "hf" or not last.is_file():
        return None
    try:
        return int(torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except (RuntimeError, KeyError, ValueError, OSError):
        return None
