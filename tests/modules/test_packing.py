"""Packed (padding-free) batches give the padded batches' log-probs and losses, and never let attention cross
two sequences."""

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lit_align.data.batch import PreferenceBatch
from lit_align.data.collate import pack_batch
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.losses import BetaDPOLoss, DPOLoss, ORPOLoss
from lit_align.models.packed_attention import PACKED_SDPA, use_packed_sdpa
from lit_align.models.packing import check_packed_attention
from lit_align.modules import PreferenceModule, SFTModule

from ..conftest import DEMO_DATA, TINY_MODEL


def _first_batch(packing: bool, task: str = "preference"):
    name = "dpo_val.jsonl" if task == "preference" else "sft_val.jsonl"
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / name))], tokenizer=str(TINY_MODEL), task=task, batch_size=4, packing=packing
    )
    data.setup()
    return next(iter(data.train_dataloader()))


@pytest.fixture(scope="module")
def batches() -> tuple[PreferenceBatch, PreferenceBatch]:
    padded, packed = _first_batch(False), _first_batch(True)
    assert torch.equal(padded.index, packed.index)  # the same pairs in the same order
    return padded, packed


def test_pack_batch_layout_by_hand():
    out = pack_batch([[1, 2, 3], [4, 5]], [[-100, 2, 3], [4, 5]], pad_token_id=0, pad_to_multiple_of=4)
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0, 0, 0]]
    # The second sequence's first token is predicted by nothing of its own: label -100, as in a padded row.
    assert out["labels"].tolist() == [[-100, 2, 3, -100, 5, -100, -100, -100]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert out["sequence_ids"].tolist() == [[0, 0, 0, 1, 1, -1, -1, -1]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0]]
    assert out["packed_sequences"] == 2


def test_packed_batches_have_no_padding_and_the_same_tokens(batches):
    padded, packed = batches
    assert packed.input_ids.shape[0] == 1 and packed.num_pairs == padded.num_pairs == 4
    assert packed.attention_mask.all()
    assert packed.input_ids.numel() == padded.attention_mask.sum()
    for number in range(padded.num_sequences):
        row = padded.input_ids[number][padded.attention_mask[number] == 1]
        assert torch.equal(packed.input_ids[0][packed.sequence_ids[0] == number], row)


def _perturbed(module):
    """``module`` with its policy moved off its reference, so rewards and margins are not all 0."""
    module.configure_model()
    with torch.no_grad():
        for parameter in module.policy.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return module


def _module(loss, **kwargs) -> PreferenceModule:
    torch.manual_seed(0)
    return _perturbed(PreferenceModule(str(TINY_MODEL), loss=loss, **kwargs))


LOSSES = {
    **{f"dpo-{kind}": DPOLoss(loss_type=kind) for kind in ("sigmoid", "robust", "ipo", "hinge", "simpo")},
    "rpo": DPOLoss(rpo_alpha=1.0),
    "r-dpo": DPOLoss(length_penalty=0.1),
    "beta-dpo": BetaDPOLoss(),
    "orpo": ORPOLoss(),
    "orpo-completion-nll": ORPOLoss(nll_on_prompt=False),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_packed_log_probs_and_loss_equal_the_padded_ones(batches, name):
    padded, packed = batches
    module = _module(LOSSES[name])
    results = []
    for batch in (padded, packed):
        logps = module.compute_logps(batch)
        loss, metrics = copy.deepcopy(module.loss)(logps)  # β-DPO's rule keeps a running mean: each from the start
        loss.backward()
        grads = [p.grad.clone() for p in module.policy.parameters()]
        module.policy.zero_grad()
        results.append((logps, loss, metrics, grads))
    (logps_a, loss_a, metrics_a, grads_a), (logps_b, loss_b, metrics_b, grads_b) = results
    for field in ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected", "chosen_sequence_nll"):
        if getattr(logps_a, field) is not None:
            assert_close(getattr(logps_b, field), getattr(logps_a, field), atol=1e-5, rtol=1e-6)
    assert torch.equal(logps_a.chosen_tokens, logps_b.chosen_tokens)
    assert_close(loss_b, loss_a, atol=1e-5, rtol=0)
    for key in metrics_a:
        assert_close(metrics_b[key], metrics_a[key], atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_sft_packed_nll_equals_padded():
    padded, packed = _first_batch(False, "sft"), _first_batch(True, "sft")
    module = SFTModule(str(TINY_MODEL))
    module.configure_model()
    nll_a, count_a = module.token_nll(padded)
    nll_b, count_b = module.token_nll(packed)
    assert count_a == count_b > 0
    assert_close(nll_b, nll_a, atol=1e-4, rtol=1e-6)


def test_attention_never_crosses_two_packed_sequences(batches):
    _, packed = batches
    module = _module(DPOLoss())
    before = module.forward_logps(module.policy, packed)[0]
    changed = PreferenceBatch(**{**vars(packed), "input_ids": packed.input_ids.clone()})
    first = changed.sequence_ids[0] == 0
    noise = torch.Generator().manual_seed(1)
    changed.input_ids[0, first] = torch.randint(3, 1000, (int(first.sum()),), generator=noise)
    after = module.forward_logps(module.policy, changed)[0]
    assert not torch.isclose(after[0], before[0])  # the perturbed sequence changes
    assert_close(after[1:], before[1:], atol=1e-6, rtol=0)  # and no other one


class PositionBlind(nn.Module):
    """A model that drops position_ids: transformers then sees one long sequence and attention crosses."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, position_ids=None, **kwargs):
        return self.inner(input_ids=input_ids, **kwargs)


def test_a_model_that_lets_packed_sequences_attend_to_each_other_is_refused():
    module = PreferenceModule(str(TINY_MODEL))
    module.configure_model()
    check_packed_attention(module.policy, "cpu")  # the real model passes
    with pytest.raises(ValueError, match="data.packing: LlamaForCausalLM|data.packing: PositionBlind"):
        check_packed_attention(PositionBlind(module.policy), "cpu")


def test_packed_sdpa_gives_the_block_mask_results_and_is_used_only_where_exact(batches):
    from transformers import MistralConfig, MistralForCausalLM

    _, packed = batches
    module = _module(DPOLoss())
    masked = module.forward_logps(module.policy, packed)[0]
    assert use_packed_sdpa(module.policy) and module.policy.config._attn_implementation == PACKED_SDPA
    check_packed_attention(module.policy, "cpu")
    assert_close(module.forward_logps(module.policy, packed)[0], masked, atol=1e-5, rtol=0)
    config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    windowed = MistralForCausalLM(MistralConfig(**config, sliding_window=8, attn_implementation="sdpa"))
    assert not use_packed_sdpa(windowed)  # a sliding window needs transformers' mask
    eager = MistralForCausalLM(MistralConfig(**config, sliding_window=None, attn_implementation="eager"))
    assert not use_packed_sdpa(eager)


def test_a_packed_run_attends_sequence_by_sequence_and_logs_no_padding(tmp_path):
    import lightning as L

    from lit_align.callbacks import TokenThroughput

    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))], tokenizer=str(TINY_MODEL), task="preference", batch_size=4,
        packing=True,
    )  # fmt: skip
    module = PreferenceModule(str(TINY_MODEL), reference="copy")
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[TokenThroughput()], default_root_dir=tmp_path, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert module.policy.config._attn_implementation == PACKED_SDPA
    assert module.reference.model.config._attn_implementation == PACKED_SDPA
    assert trainer.logged_metrics["perf/padding_fraction"] == 0


def test_preference_guided_text_packed_loss_equals_padded():
    from lit_align.modules import PreferenceGuidedDPOModule

    def first(packing):
        data = AlignDataModule(
            [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))], tokenizer=str(TINY_MODEL), task="preference",
            batch_size=4, packing=packing, guidance_text="Answer in the language of the question.",
        )  # fmt: skip
        data.setup()
        return next(iter(data.train_dataloader()))

    padded, packed = first(False), first(True)
    assert packed.guided.packed and not padded.guided.packed
    torch.manual_seed(0)
    module = _perturbed(PreferenceGuidedDPOModule(str(TINY_MODEL)))
    loss_a, _ = module.loss(module.compute_logps(padded))
    loss_b, _ = module.loss(module.compute_logps(packed))
    assert_close(loss_b, loss_a, atol=1e-5, rtol=0)
