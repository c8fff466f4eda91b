"""SDPA that attends packed sequences one at a time, so packing costs no attention over the whole row.

transformers keeps packed sequences apart under SDPA with a block-diagonal mask over the whole packed row: the
kernel then computes (and the mask holds) ``total_tokens²`` scores, most of them masked, where a padded batch
computes ``Σ length²``. For 16 sequences of 250 tokens that is 16 times the attention work, which on a small model
costs more than padding saved. Flash-attention's variable-length kernel avoids it on GPU; this is the same idea for
SDPA: cut the row at every position id that restarts at 0 and run causal SDPA on each sequence.

Registered with transformers under `PACKED_SDPA` (its `AttentionInterface` and `AttentionMaskInterface`). Rows with
a padding mask (padded batches, generation) take transformers' own SDPA path unchanged. `use_packed_sdpa` switches
an SDPA model to it; the modules do so when ``data.packing`` is on.
"""

from __future__ import annotations

import torch
from torch import nn

PACKED_SDPA = "lit_align_packed_sdpa"


def _sequence_bounds(position_ids: torch.Tensor) -> list[int]:
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    return [*starts, position_ids.shape[-1]] if starts and starts[0] == 0 else []


def packed_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA, applied sequence by sequence to a packed row (one row, no mask, restarting positions)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    bounds = _sequence_bounds(position_ids) if position_ids is not None and query.shape[0] == 1 else []
    if attention_mask is not None or query.shape[2] != key.shape[2] or len(bounds) <= 2:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # split, not slices: the backward of a split is one concatenation, a slice's fills a whole-row zero tensor
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=False)]
    pieces = [
        sdpa_attention_forward(module, q, k, v, None, **{**kwargs, "is_causal": True})[0]
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2), strict=True)
    ]
    return torch.cat(pieces, dim=1), None  # [1, tokens, heads, head_dim], as SDPA returns


def packed_sdpa_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs):
    """SDPA's mask for padded rows; none for a packed row (the attention above cuts it by position ids)."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    AttentionMaskInterface.register(PACKED_SDPA, packed_sdpa_mask)


def use_packed_sdpa(model: nn.Module) -> bool:
    """Switch ``model`` from SDPA to `PACKED_SDPA` when that is exact: SDPA now, every layer full attention (a sliding
    window needs the mask). Returns whether it switched; a model left alone keeps transformers' packed masks."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        if any(kind != "full_attention" for kind in layer_types):
            return False
    elif getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return False
    _register()
    model.set_attn_implementation(PACKED_SDPA)
    return True
