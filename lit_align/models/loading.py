"""Load a causal LM and its tokenizer the way a user's Qwen or Llama is loaded, and wrap LoRA around it.

Everything goes through ``from_pretrained``: the built-in tiny model and a hub model take the same path, so
what the tests exercise is what users run. ``trust_remote_code`` stays off unless the recipe turns it on.
QLoRA is the same path with a ``BitsAndBytesConfig``: the frozen linear weights are stored in 4 bits and only
the LoRA adapter trains.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from lit_align.tokenizer import check_model_path

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}
_COMPUTE_DTYPES = ("float32", "float16", "bfloat16")
_QUANT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "uint8": torch.uint8}


@dataclass
class LoraSettings:
    """LoRA adapter settings, passed to ``peft.LoraConfig``."""

    r: int = 16
    """Rank of the update matrices."""
    alpha: int = 32
    """Scaling numerator: the update is multiplied by ``alpha / r``."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    target_modules: list[str] | str = "all-linear"
    """Module names to adapt (e.g. ``[q_proj, v_proj]``), or ``all-linear`` for every linear layer but the head."""
    modules_to_save: list[str] = field(default_factory=list)
    """Modules trained in full and saved with the adapter (e.g. ``[embed_tokens, lm_head]`` for new tokens)."""


@dataclass
class QuantizationSettings:
    """bitsandbytes 4-bit loading for QLoRA, passed to ``transformers.BitsAndBytesConfig``."""

    load_in_4bit: bool = True
    """Store the frozen linear weights in 4 bits; ``false`` loads the model unquantized (the section is ignored)."""
    quant_type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type: ``nf4`` (NormalFloat, the QLoRA paper's) or ``fp4``."""
    double_quant: bool = True
    """Quantize the quantization constants too (about 0.4 bits per weight saved)."""
    compute_dtype: str = "bfloat16"
    """Dtype the 4-bit weights are dequantized to for each matmul (``bfloat16``, ``float16``, ``float32``)."""
    quant_storage: str | None = None
    """Dtype the packed 4-bit weights are stored in (``None``: uint8). FSDP needs it equal to the other weights'."""

    def to_transformers(self):
        from transformers import BitsAndBytesConfig

        if self.compute_dtype not in _COMPUTE_DTYPES:
            raise ValueError(f"quantization.compute_dtype must be one of {_COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if self.quant_storage is not None and self.quant_storage not in _QUANT_DTYPES:
            choices = sorted(_QUANT_DTYPES)
            raise ValueError(f"quantization.quant_storage must be one of {choices}, got {self.quant_storage!r}")
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=_QUANT_DTYPES[self.compute_dtype],
            bnb_4bit_quant_storage=_QUANT_DTYPES[self.quant_storage] if self.quant_storage else None,
        )


@dataclass(frozen=True)
class ModelSettings:
    """How a model is loaded: what ``from_pretrained`` is told. One object, passed whole to `load_causal_lm` and
    to the precomputed reference's cache key, so a setting that changes the weights cannot be missed by either."""

    name_or_path: str
    dtype: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    quantization: QuantizationSettings | None = None


def load_causal_lm(settings: ModelSettings | str, *, vocab_size: int | None = None, empty: bool = False) -> nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` plus the fixes every recipe needs; a plain string is a path with
    default settings.

    ``vocab_size`` is the tokenizer's length: when the tokenizer has more tokens than the embedding rows
    (a pad token added, for instance), the embeddings grow so every id is valid. ``quantization`` loads the
    linear layers as bitsandbytes 4-bit weights (see ``prepare_for_kbit_training`` before training them).
    ``empty`` builds the same model from its config alone on the meta device: every shape and dtype, no memory
    and no numbers, for ranks that receive the weights from another rank (see ``sharding.load_from_rank_zero``).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = ModelSettings(settings) if isinstance(settings, str) else settings
    name_or_path, dtype, quantization = settings.name_or_path, settings.dtype, settings.quantization
    trust_remote_code = settings.trust_remote_code
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    kwargs = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = _DTYPES[dtype]
    if settings.attn_implementation is not None:
        kwargs["attn_implementation"] = settings.attn_implementation
    if quantization is not None and quantization.load_in_4bit:
        if empty:
            raise ValueError("empty (meta-device) loading does not support 4-bit quantization")
        kwargs["quantization_config"] = quantization.to_transformers()
    check_model_path(name_or_path, "model path")  # the modules check theirs with the setting's key first
    # As given (not made absolute): from_pretrained records it, and a LoRA export's adapter_config.json with it.
    path = os.path.expanduser(name_or_path)
    if empty:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if kwargs.get("dtype") == "auto":
            del kwargs["dtype"]  # from_config's default is already the config's dtype
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if vocab_size is not None and vocab_size > model.get_input_embeddings().weight.shape[0]:
        log.info("resizing token embeddings of %s to %d for the tokenizer", name_or_path, vocab_size)
        # The new rows' mean-and-covariance draw needs real numbers; an empty model only needs the shape.
        model.resize_token_embeddings(vocab_size, mean_resizing=not empty)
    model.config.use_cache = False  # the KV cache only costs memory during training
    return model


def add_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    with _quiet_bitsandbytes_import():
        from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        modules_to_save=list(settings.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # PEFT's own call into transformers 5 (`model.is_gradient_checkpointing`), not ours or the user's.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, config)


@contextmanager
def _quiet_bitsandbytes_import():
    """PEFT imports bitsandbytes whenever it is installed, and on a CPU with AVX512-BF16 that import logs "Failed to
    load CPU gemm_4bit_forward from kernels-community" (an optional kernel package for 4-bit matmuls). With a 4-bit
    model, `load_causal_lm` has imported bitsandbytes already and the notice has shown; otherwise no 4-bit weight
    exists in this run, the notice is noise, and it is silenced for the import."""
    if "bitsandbytes" in sys.modules:
        yield
        return
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def prepare_for_kbit_training(model: nn.Module, gradient_checkpointing: bool) -> None:
    """``peft.prepare_model_for_kbit_training`` (freeze everything, upcast the non-quantized weights such as
    norms, embeddings and head to float32, turn on checkpointing), and keep bitsandbytes' CPU kernels trainable.

    On a CPU with AVX512-BF16, ``Linear4bit.forward`` repacks its weight into an inference-only layout the
    first time it runs with ``not self.training`` and an input that does not require grad: any eval-mode,
    no-grad forward, such as Lightning's sanity check and every validation loop. The repacked weight goes
    through ``gemv_4bit``, which has no backward, so once training resumes no gradient flows back through the
    frozen layers and the LoRA weights below the last layer stop learning, silently. Switching the layer's
    ``support_avx512bf16_for_cpu`` off removes the trigger; evaluation then dequantizes as training does.
    """
    from bitsandbytes.nn import Linear4bit
    from peft import prepare_model_for_kbit_training

    # Checkpointing is turned on here rather than by PEFT: with use_reentrant=False PEFT would only call
    # transformers' deprecated `gradient_checkpointing_enable` (its input-grad hook is for reentrant checkpointing).
    prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def enable_gradient_checkpointing(model: nn.Module) -> None:
    # Non-reentrant checkpointing works with frozen inputs (LoRA) and with torch.compile; reentrant does not.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 renamed it (the old name warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0, as TRL's ``disable_dropout`` does for preference training.

    With dropout on, the policy and the reference see different noise and the implicit rewards are noisy
    even before any update.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
