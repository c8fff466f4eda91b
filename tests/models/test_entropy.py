"""Entropy of the next-token distribution (GRPO's ``entropy`` diagnostic): the formula on distributions whose
entropy is known by hand, and the chunked hidden-state path against the full logits on the tiny chat model."""

import math

import pytest
import torch

from lit_align.constants import IGNORE_INDEX
from lit_align.models import load_causal_lm
from lit_align.models.label_logps import label_token_logps
from lit_align.models.token_logps import chunked_token_entropy, entropy_from_logits

from ..conftest import TINY_MODEL

X = IGNORE_INDEX


def test_uniform_distribution_has_entropy_log_v():
    """``V`` equal logits: ``p = 1/V`` everywhere, ``H = -sum(1/V * log(1/V)) = log V``, whatever their value. At
    1000 the two terms of ``logsumexp(z) - sum(p z)`` are about 1000 each, and float32 spaces numbers there 6e-5
    apart: the difference is good to about 1e-4."""
    for vocab in (2, 8, 1915):
        torch.testing.assert_close(entropy_from_logits(torch.zeros(3, vocab)), torch.full((3,), math.log(vocab)))
    shifted = entropy_from_logits(torch.full((1, 8), 1000.0))
    torch.testing.assert_close(shifted, torch.tensor([math.log(8)]), atol=1e-4, rtol=0)


def test_a_peaked_distribution_has_entropy_near_zero():
    """One logit 50 above seven others: ``p_other = e^-50 ≈ 2e-22``, so ``H ≈ 7 · 50 · 2e-22``, 0 in float32."""
    logits = torch.zeros(8)
    logits[3] = 50.0
    assert 0.0 <= entropy_from_logits(logits).item() < 1e-6


def test_a_hand_computed_distribution():
    """Logits ``log [1, 1, 2]``: ``p = [1/4, 1/4, 1/2]``, ``H = 2 · (1/4) log 4 + (1/2) log 2 = 1.5 log 2``; in
    half precision the same (computed in float32)."""
    logits = torch.tensor([[0.0, 0.0, math.log(2.0)]])
    expected = torch.tensor([1.5 * math.log(2.0)])
    torch.testing.assert_close(entropy_from_logits(logits), expected)
    half = entropy_from_logits(logits.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, atol=1e-3, rtol=0)


def test_chunked_entropy_is_zero_off_the_label_positions():
    """Identity head over ``V = 5`` zero states: ``log 5`` wherever position ``t`` predicts a label at ``t + 1``.
    Labels ``[X, X, 7, 8]`` and ``[X, 4, X, X]``: positions 1, 2 of row 0 and 0 of row 1."""
    hidden = torch.zeros(2, 4, 5)
    labels = torch.tensor([[X, X, 7, 8], [X, 4, X, X]])
    for chunk_size in (1, 2, 5):
        entropy = chunked_token_entropy(hidden, labels, lambda states: states, chunk_size)
        log5 = math.log(5)
        torch.testing.assert_close(entropy, torch.tensor([[0.0, log5, log5], [log5, 0.0, 0.0]]))


# ---- label_token_logps(..., entropy=True) on the tiny model ----------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(str(TINY_MODEL))


def _batch(vocab_size: int) -> tuple[dict, torch.Tensor]:
    """Three right-padded rows of 10, lengths 10, 8, 6, labels -100 on a 3-token prompt and the padding:
    7 + 5 + 3 = 15 label positions, so chunks of 3 divide them and chunks of 1 make 15."""
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, vocab_size, (3, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    attention_mask[2, 6:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    labels[:, :3] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention_mask}, labels


@pytest.mark.parametrize("chunk_size", [1, 3, 4, None, 0])
def test_chunked_and_full_logits_entropy_agree(model, chunk_size):
    """Every path (one position per chunk, chunks that divide the 15 positions, a partial last chunk, the default
    size, and 0: the full logits) gives the entropy of the model's own logits at the label positions, 0 elsewhere,
    without a gradient, and leaves the log-probs as they are without ``entropy``."""
    inputs, labels = _batch(model.config.vocab_size)
    with torch.no_grad():
        logits = model(**inputs).logits[:, :-1]
    mask = labels[:, 1:] != IGNORE_INDEX
    assert int(mask.sum()) == 15
    expected = entropy_from_logits(logits) * mask

    logps, got_mask, entropy = label_token_logps(model, labels, inputs, chunk_size=chunk_size, entropy=True)
    assert torch.equal(got_mask, mask)
    torch.testing.assert_close(entropy, expected, atol=1e-5, rtol=0)
    assert (entropy[~mask] == 0).all()
    assert (entropy[mask] > 0).all() and (entropy[mask] <= math.log(model.config.vocab_size) + 1e-5).all()
    assert logps.requires_grad and not entropy.requires_grad

    plain_logps, _ = label_token_logps(model, labels, inputs, chunk_size=chunk_size)
    torch.testing.assert_close(logps, plain_logps, atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunk_size", [None, 0, 2])
def test_log_probs_at_a_temperature_are_those_of_the_scaled_logits(chunk_size):
    """GRPO scores its samples under softmax(logits / T), the distribution sampling at T draws from."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    ids = torch.randint(3, 100, (2, 10))
    labels = ids.masked_fill(torch.arange(10) < 4, -100)
    logps, mask = label_token_logps(model, labels, {"input_ids": ids}, chunk_size, temperature=0.7)
    with torch.no_grad():
        expected = torch.log_softmax(model(input_ids=ids).logits[:, :-1] / 0.7, -1)
    expected = expected.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask
    torch.testing.assert_close(logps.detach(), expected, atol=1e-5, rtol=1e-5)
