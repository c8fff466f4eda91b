"""Loading causal LMs and tokenizers, LoRA, QLoRA, gradient checkpointing."""

from lit_align.models.loading import LoraSettings, ModelSettings, QuantizationSettings, load_causal_lm
from lit_align.tokenizer import load_tokenizer

__all__ = ["LoraSettings", "ModelSettings", "QuantizationSettings", "load_causal_lm", "load_tokenizer"]
