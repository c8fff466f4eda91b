"""Whether a model keeps packed sequences apart, checked on the model itself before a packed run trusts it.

Packed rows (``data.packing``) carry no attention mask: transformers finds the sequence boundaries from the
position ids that restart at 0 (`transformers.masking_utils.find_packed_sequence_indices`) and builds attention
that never crosses them. A model whose code builds its own masks, or an attention kernel that ignores the
positions, would let every sequence see the ones before it: log-probs change, nothing fails. So the module runs
two sequences once, packed and alone, and stops if the second one's logits differ.
"""

from __future__ import annotations

import torch
from torch import nn

FIRST, SECOND = [3, 4, 5, 6, 7], [8, 9, 10]


def packed_attention_error(model: nn.Module, device: torch.device | str) -> float:
    """Largest logit difference on the second of two packed sequences between the packed forward and the
    sequence alone, relative to ``1 + `` the largest logit (0 up to rounding when attention stays inside each
    sequence)."""
    packed_ids = torch.tensor([FIRST + SECOND], device=device)
    positions = torch.tensor([list(range(len(FIRST))) + list(range(len(SECOND)))], device=device)
    was_training = model.training
    model.eval()  # dropout would differ between the two forwards
    try:
        with torch.no_grad():
            packed = model(input_ids=packed_ids, position_ids=positions, use_cache=False).logits
            packed = packed[0, len(FIRST) :].float()
            alone = model(input_ids=torch.tensor([SECOND], device=device)).logits[0].float()
    finally:
        model.train(was_training)
    return (packed - alone).abs().max().item() / (1.0 + alone.abs().max().item())


def check_packed_attention(model: nn.Module, device: torch.device | str) -> None:
    """Stop, naming the architecture and its attention, if ``model`` lets packed sequences attend to each other."""
    error = packed_attention_error(model, device)
    config = getattr(model, "config", None)
    weights = next(model.parameters()).dtype
    if error > (1e-4 if weights == torch.float32 else 2e-2):  # bf16 rounding of a different kernel shape
        name = type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__
        attention = getattr(config, "_attn_implementation", "?")
        raise ValueError(
            f"data.packing: {name} with attn_implementation={attention} lets packed sequences attend to each other "
            f"(a sequence's logits change by {error:.3g} of their scale when another is packed before it). Set "
            "data.packing: false, or use attn_implementation: flash_attention_2 or sdpa with a transformers model "
            "that reads position_ids."
        )
