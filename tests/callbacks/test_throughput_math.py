"""The throughput arithmetic, without a Trainer."""

import pytest
import torch

from lit_align.callbacks.throughput_math import (
    count_tokens,
    grad_l2_norm,
    padding_fraction,
    padding_share,
    peak_memory_bytes,
    rate,
)

# Two rows of 6 positions with 4 and 3 real tokens: 7 real of 12, so 5/12 is padding.
MASK = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])


def test_count_tokens_counts_only_real_tokens():
    assert count_tokens(MASK) == 7
    assert count_tokens(torch.zeros(2, 3, dtype=torch.long)) == 0


def test_padding_fraction():
    assert padding_fraction(MASK) == pytest.approx(5 / 12)
    assert padding_fraction(torch.ones(3, 4, dtype=torch.long)) == 0.0
    assert padding_share(0, 0) == 0.0


def test_rate():
    assert rate(7, 2.0) == 3.5
    assert rate(7, 0.0) == 0.0


def test_grad_l2_norm_matches_clip_grad_norm():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    no_grad = torch.nn.Parameter(torch.zeros(1))
    # sqrt(3^2 + 4^2) = 5
    assert grad_l2_norm([a, b, no_grad]).item() == pytest.approx(5.0)
    assert torch.nn.utils.clip_grad_norm_([a, b], max_norm=1e9).item() == pytest.approx(5.0)
    assert grad_l2_norm([no_grad]) is None


def test_peak_memory_on_cpu_is_the_resident_set():
    peak = peak_memory_bytes(torch.device("cpu"))
    assert peak is not None and peak > 10 * 2**20  # a Python process with torch loaded holds well over 10 MiB
