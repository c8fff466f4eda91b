"""Example identity: the data module numbers each split's examples, and preference batches carry the numbers."""

import pytest
import torch

from lit_align.data.collate import PreferenceCollator
from lit_align.data.datamodule import AlignDataModule, DataSource

from ..conftest import DEMO_DATA, TINY_MODEL


def _pair(index: int, split: str = "train") -> dict:
    ids = [1, 2 + index]
    return {
        "chosen_input_ids": ids,
        "chosen_labels": ids,
        "rejected_input_ids": ids,
        "rejected_labels": ids,
        "index": index,
        "split": split,
    }


def test_collator_adds_index_and_split_in_pair_order():
    batch = PreferenceCollator(pad_token_id=0)([_pair(7), _pair(3)])
    assert batch.index.dtype == torch.long and batch.index.tolist() == [7, 3]
    assert batch.split == "train" and batch.input_ids.shape[0] == 4 and batch.num_pairs == batch.num_samples == 2
    plain = PreferenceCollator(pad_token_id=0)([{k: v for k, v in _pair(1).items() if k not in ("index", "split")}])
    assert plain.index is None and plain.split is None and plain.guided is None
    with pytest.raises(ValueError, match="several splits"):
        PreferenceCollator(pad_token_id=0)([_pair(0), _pair(1, "val")])


def test_datamodule_numbers_each_split_and_its_batches_carry_the_numbers():
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        val=[DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="preference",
        batch_size=4,
        max_val_examples=10,
    )
    data.setup()
    for split, n in (("train", 200), ("val", 10)):
        examples = data.split_examples(split)
        assert [e["index"] for e in examples] == list(range(n)) and {e["split"] for e in examples} == {split}
    val = next(iter(data.val_dataloader()))
    assert val.split == "val" and val.index.tolist() == [0, 1, 2, 3]
    train = next(iter(data.train_dataloader()))
    examples = data.split_examples("train")
    assert train.split == "train"
    for row, index in enumerate(train.index.tolist()):  # the index names the example the row came from
        ids = examples[index]["chosen_input_ids"]
        assert train.input_ids[row, : len(ids)].tolist() == ids
    loader = data.examples_dataloader([examples[5], examples[2], examples[9]])
    assert [b.index.tolist() for b in loader] == [[5, 2, 9]]


def test_pairs_chosen_and_rejected_split_rows_in_the_collated_layout():
    # Pair 0 is [1, 9] / [1, 9, 8]; pair 1 is [1, 5, 6] / [1, 7]: chosen rows first, then rejected, padded with 0.
    pairs = [
        {
            "chosen_input_ids": [1, 9],
            "chosen_labels": [-100, 9],
            "rejected_input_ids": [1, 9, 8],
            "rejected_labels": [-100, 9, 8],
        },
        {
            "chosen_input_ids": [1, 5, 6],
            "chosen_labels": [-100, 5, 6],
            "rejected_input_ids": [1, 7],
            "rejected_labels": [-100, 7],
        },
    ]
    batch = PreferenceCollator(pad_token_id=0)(pairs)
    assert batch.chosen().input_ids.tolist() == [[1, 9, 0], [1, 5, 6]]
    assert batch.rejected().input_ids.tolist() == [[1, 9, 8], [1, 7, 0]]
    assert batch.rejected().attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    chosen, rejected = batch.pairs(torch.tensor([10.0, 11.0, 20.0, 21.0]))
    assert chosen.tolist() == [10.0, 11.0] and rejected.tolist() == [20.0, 21.0]
