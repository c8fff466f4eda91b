"""Loading causal LMs and tokenizers, LoRA, QLoRA, gradient checkpointing."""

from lit_align.models.loading import LoraSettings, QuantizationSettings, load_causal_lm, load_tokenizer

__all__ = ["LoraSettings", "QuantizationSettings", "load_causal_lm", "load_tokenizer"]
