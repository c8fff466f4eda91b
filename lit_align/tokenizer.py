"""The run's tokenizer, in a file both the data layer and the model layer may import.

The data module needs the tokenizer (chat template, lengths) and must never import model loading; the modules
need it for the vocabulary size and generation. Both load it here, the same way.
"""

from __future__ import annotations

import os


def resolve_path(name_or_path: str) -> str:
    """An existing local directory becomes absolute, so exports that record it load from any working directory."""
    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained`` with a pad token (eos when the tokenizer has none) and a chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Llama-style tokenizers ship without a pad token; padding positions are masked, so eos is safe to reuse.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(
            f"tokenizer {name_or_path!r} has no chat template; lit_align renders every example with the "
            "tokenizer's chat template. Use an instruct/chat tokenizer or set `chat_template` in its "
            "tokenizer_config.json."
        )
    return tokenizer
