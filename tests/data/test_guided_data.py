"""Guided pairs for preference-guided DPO: the instruction in the system message, tokenised and collated beside the
plain pair, scoring the same completion tokens."""

from collections import Counter

import pytest
import torch

from lit_align.constants import IGNORE_INDEX
from lit_align.data.collate import PreferenceCollator
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.examples import guided_prompt, tokenize_record
from lit_align.data.prepare import PrepareSettings

from ..conftest import DEMO_DATA, TINY_MODEL

GUIDANCE = "Answer in the language of the user's question."
PREFERENCE = PrepareSettings(task="preference", max_length=256)
GUIDED = PrepareSettings(task="preference", max_length=256, guidance_text=GUIDANCE)
RECORD = {
    "prompt": [{"role": "user", "content": "17和16哪个大？"}],
    "chosen": [{"role": "assistant", "content": "17比16大。"}],
    "rejected": [{"role": "assistant", "content": "17 is bigger than 16."}],
}


def test_guided_prompt_adds_or_prepends_to_the_system_message():
    user = [{"role": "user", "content": "hi"}]
    assert guided_prompt(user, GUIDANCE) == [{"role": "system", "content": GUIDANCE}, *user]
    with_system = [{"role": "system", "content": "Be brief."}, *user]
    assert guided_prompt(with_system, GUIDANCE) == [{"role": "system", "content": f"{GUIDANCE}\n\nBe brief."}, *user]
    assert with_system[0]["content"] == "Be brief."  # the record is not modified


def test_guided_pair_scores_the_same_completion(tokenizer):
    counts = Counter()
    example = tokenize_record(RECORD, tokenizer, GUIDED, counts)
    plain = tokenize_record(RECORD, tokenizer, PREFERENCE, Counter())
    assert {k: v for k, v in example.items() if not k.startswith("guided_") and k != "length"} == {
        k: v for k, v in plain.items() if k != "length"
    }
    for side in ("chosen", "rejected"):
        guided_ids = example[f"guided_{side}_input_ids"]
        assert GUIDANCE in tokenizer.decode(guided_ids) and GUIDANCE not in tokenizer.decode(plain[f"{side}_input_ids"])
        completion = [t for t in example[f"guided_{side}_labels"] if t != IGNORE_INDEX]
        assert completion == [t for t in plain[f"{side}_labels"] if t != IGNORE_INDEX]
    assert example["length"] == len(example["guided_rejected_input_ids"]) > plain["length"]


def test_guided_pair_cut_by_truncation_is_dropped(tokenizer):
    plain = tokenize_record(RECORD, tokenizer, PREFERENCE, Counter())
    max_length = plain["length"]  # enough for the plain pair, not for the guided one
    counts = Counter()
    # The prompt may not shrink: the guided completion loses its end, unlike the plain one.
    settings = PrepareSettings(task="preference", max_length=max_length, max_prompt_length=1000, guidance_text=GUIDANCE)
    assert tokenize_record(RECORD, tokenizer, settings, counts) is None
    # The prompt may shrink: it loses its start, which is the instruction.
    settings = PrepareSettings(task="preference", max_length=max_length, max_prompt_length=0, guidance_text=GUIDANCE)
    assert tokenize_record(RECORD, tokenizer, settings, counts) is None
    assert counts == Counter({"dropped/guided_completion_truncated": 1, "dropped/guided_instruction_truncated": 1})


def test_collator_adds_guided_rows_in_the_plain_layout(tokenizer):
    examples = [
        tokenize_record(r, tokenizer, GUIDED, Counter())
        for r in (RECORD, {**RECORD, "prompt": [{"role": "user", "content": "What is double 36?"}]})
    ]
    guided = PreferenceCollator(tokenizer.pad_token_id)(examples).guided
    assert guided.input_ids.shape[0] == 4 and guided.input_ids.shape == guided.labels.shape
    for row, (example, side) in enumerate([(e, s) for s in ("chosen", "rejected") for e in examples]):
        ids = example[f"guided_{side}_input_ids"]
        assert guided.input_ids[row, : len(ids)].tolist() == ids
        assert guided.attention_mask[row].sum() == len(ids)
    plain = PreferenceCollator(tokenizer.pad_token_id)([tokenize_record(RECORD, tokenizer, PREFERENCE, Counter())])
    assert plain.guided is None


def test_datamodule_serves_guided_batches():
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="preference",
        batch_size=4,
        guidance_text=GUIDANCE,
    )
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch.guided.input_ids.shape[0] == batch.input_ids.shape[0] == 8
    assert all(GUIDANCE in data.tokenizer.decode(row) for row in batch.guided.input_ids)
    # Completion tokens are the same in both layouts, row by row.
    for row in range(8):
        guided, plain = batch.guided.labels[row], batch.labels[row]
        assert torch.equal(guided[guided != IGNORE_INDEX], plain[plain != IGNORE_INDEX])


def test_guidance_text_needs_preference_data():
    with pytest.raises(ValueError, match="task: preference"):
        AlignDataModule([], tokenizer=str(TINY_MODEL), task="sft", guidance_text=GUIDANCE)
