"""The arithmetic behind `TokenThroughput`, kept out of the callback so it can be tested without a Trainer.

Throughput is counted in real tokens (attention mask 1), not padded positions: a batch padded to twice its
content length does twice the work but teaches nothing more, and ``padding_fraction`` says how much of the
work that was. Lightning's own ``ThroughputMonitor`` follows the same split (``fabric/utilities/throughput.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch


def count_tokens(attention_mask: torch.Tensor) -> int:
    """Real (non-pad) tokens in a batch: the number of ones in its attention mask."""
    return int(attention_mask.sum().item())


def padding_share(real_tokens: int, positions: int) -> float:
    """Share of ``positions`` that are padding, ``1 - real_tokens / positions`` (0 for an empty batch)."""
    return 1.0 - real_tokens / positions if positions > 0 else 0.0


def padding_fraction(attention_mask: torch.Tensor) -> float:
    """Share of a batch's positions that are padding: a mask with 7 ones among 12 positions gives 5/12."""
    return padding_share(count_tokens(attention_mask), attention_mask.numel())


def rate(count: float, seconds: float) -> float:
    """``count / seconds``, or 0 when no time has been measured (a zero-length interval is no rate at all)."""
    return count / seconds if seconds > 0 else 0.0


def grad_l2_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor | None:
    """Global L2 norm of the gradients, ``sqrt(sum_p ||grad_p||^2)``, as ``clip_grad_norm_`` computes it, or None
    when no parameter has a gradient. Stays on the device: no host sync."""
    norms = [p.grad.detach().float().norm(2) for p in parameters if p.grad is not None]
    if not norms:
        return None
    return torch.linalg.vector_norm(torch.stack(norms), 2)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak memory of this process: CUDA's maximum allocated bytes on a CUDA device; otherwise the peak resident
    set size from ``getrusage`` (reported in KiB on Linux, in bytes on macOS). None where neither exists."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
