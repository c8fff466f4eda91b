"""What ``generate`` needs besides the model: prompts padded on the left, and every id that ends a turn.

Shared by the GenerationLogger callback and ``scripts/eval_math.py``; no Lightning here, so a script that only
generates does not pay for importing it.
"""

from __future__ import annotations

import torch


def left_pad(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``rows`` padded on the left, as decoder-only generation needs."""
    length = max(len(row) for row in rows)
    ids = torch.tensor([[pad_token_id] * (length - len(row)) + row for row in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (length - len(row)) + [1] * len(row) for row in rows], dtype=torch.long)
    return ids, mask


def eos_token_ids(model: torch.nn.Module, tokenizer) -> list[int]:
    """The tokenizer's end-of-sequence id and any the model's generation config adds (chat models often stop
    on an end-of-turn token as well)."""
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    for token in [extra] if isinstance(extra, int) else list(extra or []):
        if token not in ids:
            ids.append(token)
    return ids
