"""Loading causal LMs and tokenizers, LoRA, gradient checkpointing."""

from lit_align.models.loading import LoraSettings, load_causal_lm, load_tokenizer

__all__ = ["LoraSettings", "load_causal_lm", "load_tokenizer"]
