"""Guided pairs for preference-guided DPO: the instruction in the system message, tokenised and collated beside the
plain pair, scoring the same completion tokens."""

from collections import Counter

import pytest
import torch

from lit_align.constants import IGNORE_INDEX
from lit_align.data.collate import PreferenceCollator
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.prepare import guided_prompt, tokenize_record

from ..conftest import DEMO_DATA, TINY_MODEL

GUIDANCE = "Answer in the language of the user's question."
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
    example = tokenize_record(RECORD, tokenizer, "preference", 256, None, counts, guidance_text=GUIDANCE)
    plain = tokenize_record(RECORD, tokenizer, "preference", 256, None, Counter())
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
    plain = tokenize_record(RECORD, tokenizer, "preference", 256, None, Counter())
    max_length = plain["length"]  # enough for the plain pair, not for the guided one
    counts = Counter()
    # The prompt may not shrink: the guided completion loses its end, unlike the plain one.
    assert tokenize_record(RECORD, tokenizer, "preference", max_length, 1000, counts, guidance_text=GUIDANCE) is None
    # The prompt may shrink: it loses its start, which is the instruction.
    assert tokenize_record(RECORD, tokenizer, "preference", max_length, 0, counts, guidance_text=GUIDANCE) is None
    assert counts == Counter({"dropped/guided_completion_truncated": 1, "dropped/guided_instruction_truncated": 1})


def test_collator_adds_guided_rows_in_the_plain_layout(tokenizer):
    examples = [
        tokenize_record(r, tokenizer, "preference", 256, None, Counter(), guidance_text=GUIDANCE)
        for r in (RECORD, {**RECORD, "prompt": [{"role": "user", "content": "What is double 36?"}]})
    ]
    batch = PreferenceCollator(tokenizer.pad_token_id)(examples)
    assert set(batch) == {f"{p}{k}" for p in ("", "guided_") for k in ("input_ids", "attention_mask", "labels")}
    assert batch["guided_input_ids"].shape[0] == 4 and batch["guided_input_ids"].shape == batch["guided_labels"].shape
    for row, (example, side) in enumerate([(e, s) for s in ("chosen", "rejected") for e in examples]):
        ids = example[f"guided_{side}_input_ids"]
        assert batch["guided_input_ids"][row, : len(ids)].tolist() == ids
        assert batch["guided_attention_mask"][row].sum() == len(ids)
    assert "guided_input_ids" not in PreferenceCollator(tokenizer.pad_token_id)(
        [tokenize_record(RECORD, tokenizer, "preference", 256, None, Counter())]
    )


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
    assert batch["guided_input_ids"].shape[0] == batch["input_ids"].shape[0] == 8
    assert all(GUIDANCE in data.tokenizer.decode(row) for row in batch["guided_input_ids"])
    # Completion tokens are the same in both layouts, row by row.
    for row in range(8):
        guided, plain = batch["guided_labels"][row], batch["labels"][row]
        assert torch.equal(guided[guided != IGNORE_INDEX], plain[plain != IGNORE_INDEX])


def test_guidance_text_needs_preference_data():
    with pytest.raises(ValueError, match="task: preference"):
        AlignDataModule([], tokenizer=str(TINY_MODEL), task="sft", guidance_text=GUIDANCE)
