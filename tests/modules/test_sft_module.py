"""SFTModule without a Trainer: the loss is over assistant tokens only, validation is token-weighted."""

import math

import pytest
import torch
from torch.testing import assert_close

from lit_align.data.collate import SFTCollator
from lit_align.data.tokenize import tokenize_sft
from lit_align.modules import SFTModule

from ..conftest import TINY_MODEL

CHATS = [
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."}],
    [
        {"role": "system", "content": "Answer in Chinese."},
        {"role": "user", "content": "天空是什么颜色？"},
        {"role": "assistant", "content": "天空是蓝色的，晴天的时候尤其明显。"},
    ],
]


@pytest.fixture(scope="module")
def module():
    module = SFTModule(str(TINY_MODEL))
    module.configure_model()
    return module


def _batch(module, chats):
    examples = [tokenize_sft(module.tokenizer, chat, max_length=256) for chat in chats]
    collate = SFTCollator(module.tokenizer.pad_token_id)
    return collate([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])


def test_token_nll_matches_a_manual_sum_over_assistant_tokens(module):
    batch = _batch(module, CHATS)
    nll, n_tokens = module.token_nll(batch)
    with torch.no_grad():
        logprobs = module.policy(input_ids=batch.input_ids).logits.log_softmax(-1)
    manual, count = 0.0, 0
    for row in range(2):
        for t in range(1, batch.input_ids.shape[1]):
            label = batch.labels[row, t].item()
            if label != -100:
                manual -= logprobs[row, t - 1, label].item()
                count += 1
    assert n_tokens.item() == count
    assert nll.item() == pytest.approx(manual, rel=1e-5)


def test_validation_loss_is_weighted_by_tokens_not_batches(module):
    # Two batches of very different sizes: val/loss is total NLL / total tokens, not the mean of batch means.
    batches = [_batch(module, CHATS[:1]), _batch(module, CHATS[1:])]
    parts = [module.token_nll(b) for b in batches]
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, value)
    module.on_validation_epoch_start()
    with torch.no_grad():
        for i, b in enumerate(batches):
            module.validation_step(b, i)
    module.on_validation_epoch_end()
    expected = sum(n for n, _ in parts) / sum(c for _, c in parts)
    assert_close(logged["val/loss"], expected.detach().float())
    assert logged["val/ppl"].item() == pytest.approx(math.exp(expected.item()), rel=1e-5)
    batch_mean = sum((n / c) for n, c in parts) / 2
    assert abs(batch_mean.item() - expected.item()) > 1e-3  # the two would differ here


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        module = SFTModule(str(TINY_MODEL), gradient_checkpointing=checkpointing)
        module.configure_model()
        batch = _batch(module, CHATS)
        nll, n_tokens = module.token_nll(batch)
        (nll / n_tokens).backward()
        grads.append(module.policy.model.layers[0].mlp.down_proj.weight.grad.clone())
    assert module.policy.model.gradient_checkpointing
    assert_close(grads[0], grads[1])
