"""What ``lit_align eval`` evaluates, loaded once, on the device it runs on.

Four things a user has after training, one setting (``model.path``) for all of them: a run's ``hf/`` export (a
full model or a LoRA adapter), a Lightning checkpoint of a run (rebuilt through the run's ``config.yaml``), a hub
name or local model directory (with an optional ``adapter`` on top), or a GGUF file in a directory or hub repo
(``gguf_file``; converted once to a cached float32 directory). Adapters stay unmerged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lit_align.models.trained import TrainedPolicy, load_pretrained_dir, load_run_checkpoint

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


@dataclass
class EvalModel:
    """The model to evaluate and where it runs."""

    path: str
    """A run's ``hf/`` export, a run's ``checkpoints/*.ckpt``, a local model directory or a hub name."""
    adapter: str | None = None
    """A LoRA adapter directory to evaluate on top of ``path`` (unmerged)."""
    gguf_file: str | None = None
    """A GGUF file inside ``path`` (a directory or hub repo), converted once to a cached float32 directory."""
    tokenizer: str | None = None
    """Tokenizer directory or hub name; default: the one saved with the model (or adapter)."""
    dtype: str | None = None
    """``float32``, ``bfloat16``, ``float16`` or ``auto`` (the saved dtype); ``None``: float32 on CPU, auto on GPU."""
    device: str | None = None
    """``cpu``, ``cuda``, ``cuda:1``; ``None``: the first GPU if there is one, else the CPU."""
    trust_remote_code: bool = False
    """Run model code from the hub repository (off: only transformers' own architectures load)."""
    name: str | None = None
    """A short name for tables, plots and the default output folder; default: from ``path``."""

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @property
    def is_checkpoint(self) -> bool:
        return self.path.endswith(".ckpt")

    @property
    def display_name(self) -> str:
        """``name``, else the run's folder name (``version_3``'s experiment, for a run), else the last path part."""
        if self.name:
            return self.name
        path = Path(self.path)
        if self.is_checkpoint:
            path = path.parent.parent  # <experiment>/version_N/checkpoints/x.ckpt
        elif path.name == "hf":
            path = path.parent
        if path.name.startswith("version_") or path.name == "latest":
            return f"{path.parent.name}-{path.name}"
        return path.name or self.path.replace("/", "__")

    def run_directory(self) -> Path | None:
        """The lit_align run this model comes from (a checkpoint's or an ``hf/`` export's run folder), if any."""
        path = Path(self.path)
        if self.is_checkpoint and path.parent.name == "checkpoints":
            return path.parent.parent
        if path.name == "hf" and (path.parent / "config.yaml").is_file():
            return path.parent
        return None

    def resolved_device(self) -> torch.device:
        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_for_eval(settings: EvalModel) -> TrainedPolicy:
    """The model (in eval mode, on its device, KV cache on for generation) and tokenizer to evaluate."""
    device = settings.resolved_device()
    dtype = settings.dtype or ("float32" if device.type == "cpu" else "auto")
    options = {"dtype": _DTYPES[dtype], "trust_remote_code": settings.trust_remote_code}
    if settings.is_checkpoint:
        if not Path(settings.path).is_file():
            raise FileNotFoundError(f"model.path: no such checkpoint: {settings.path}")
        trained = load_run_checkpoint(settings.path)
        if dtype != "auto":
            trained.model.to(_DTYPES[dtype])
    else:
        path = settings.path
        if settings.gguf_file:
            from lit_align.models.gguf import gguf_to_hf_dir

            path = str(gguf_to_hf_dir(path, settings.gguf_file, key="model.gguf_file"))
        _check_model_dir(path)
        trained = load_pretrained_dir(path, **options)
    if settings.adapter:
        from peft import PeftModel

        _check_model_dir(settings.adapter, key="model.adapter")
        trained.model = PeftModel.from_pretrained(trained.model, settings.adapter)
    if settings.tokenizer:
        from transformers import AutoTokenizer

        trust = settings.trust_remote_code
        trained.tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer, trust_remote_code=trust)
    trained.model.to(device).eval()
    trained.model.config.use_cache = True  # training turns it off; generative tasks want it
    return trained


def _check_model_dir(path: str, key: str = "model.path") -> None:
    from lit_align.tokenizer import check_model_path

    check_model_path(path, key)
