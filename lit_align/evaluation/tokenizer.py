"""The tokenizer of what ``lit_align eval`` would evaluate, without its weights (for ``--dry_run``)."""

from __future__ import annotations

from pathlib import Path

from lit_align.evaluation.model import EvalModel


def tokenizer_of(model: EvalModel):
    """``model.tokenizer``; else the adapter's or model directory's own; for a checkpoint, its run's ``hf/`` export
    or the tokenizer its ``config.yaml`` names; for a GGUF file, the tokenizer inside it."""
    from transformers import AutoTokenizer

    trust = model.trust_remote_code
    if model.tokenizer:
        return AutoTokenizer.from_pretrained(model.tokenizer, trust_remote_code=trust)
    if model.adapter and _has_tokenizer(Path(model.adapter)):
        return AutoTokenizer.from_pretrained(model.adapter, trust_remote_code=trust)
    if model.is_checkpoint:
        return AutoTokenizer.from_pretrained(_checkpoint_tokenizer(Path(model.path)), trust_remote_code=trust)
    if model.gguf_file:
        return AutoTokenizer.from_pretrained(model.path, gguf_file=model.gguf_file, trust_remote_code=trust)
    path = Path(model.path)
    if (path / "adapter_config.json").is_file() and not _has_tokenizer(path):
        import json

        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        return AutoTokenizer.from_pretrained(base, trust_remote_code=trust)
    return AutoTokenizer.from_pretrained(model.path, trust_remote_code=trust)


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _checkpoint_tokenizer(checkpoint: Path) -> str:
    import yaml

    from lit_align.models.trained import run_config_of

    run = checkpoint.parent.parent
    if _has_tokenizer(run / "hf"):
        return str(run / "hf")
    init_args = yaml.safe_load(run_config_of(checkpoint).read_text(encoding="utf-8"))["model"]["init_args"]
    return init_args.get("tokenizer_name_or_path") or init_args["model_name_or_path"]
