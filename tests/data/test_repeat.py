"""RepeatedBatches: each block of an optimizer step's batches served several times, resumable at every position."""

import json

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.repeat import RepeatedBatches, resume_point
from lit_align.data.sampler import LengthBucketBatchSampler

from ..conftest import TINY_MODEL


def _inner(num_batches: int, seed: int = 3) -> LengthBucketBatchSampler:
    """``num_batches`` batches of 2 over examples of assorted lengths, in a seeded order."""
    lengths = [10 + (7 * i) % 50 for i in range(2 * num_batches)]
    return LengthBucketBatchSampler(lengths, 2, bucket_bounds=[64], seed=seed)


def _names(batches, inner_plan):
    """Each served batch as its position in the inner sampler's plan (0 = b1)."""
    return [inner_plan.index(batch) for batch in batches]


def test_blocks_of_an_optimizer_step_are_served_repeats_times():
    inner = _inner(4)
    plan = inner.plan()
    repeated = RepeatedBatches(inner, repeats=2, block=2)
    assert _names(list(repeated), plan) == [0, 1, 0, 1, 2, 3, 2, 3]  # b1 b2 b1 b2 b3 b4 b3 b4
    assert len(repeated) == 8


def test_a_short_last_block_is_repeated_on_its_own():
    inner = _inner(5)
    repeated = RepeatedBatches(inner, repeats=3, block=2)
    assert _names(list(repeated), inner.plan()) == [0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 4, 4, 4]
    assert len(repeated) == 15


def test_one_repeat_is_the_inner_order():
    inner = _inner(4)
    assert list(RepeatedBatches(inner, repeats=1, block=4)) == inner.plan()


def test_resume_point_by_hand():
    # 4 inner batches, blocks of 2, 2 repeats: b1 b2 b1 b2 | b3 b4 b3 b4
    assert resume_point(0, 4, 2, 2) == (0, 0)
    assert resume_point(3, 4, 2, 2) == (0, 3)  # b1 b2 b1 served: restart block 1, skip 3, serve b2
    assert resume_point(5, 4, 2, 2) == (2, 1)  # b3 served of block 2: serve b4 next
    assert resume_point(8, 4, 2, 2) == (4, 0)  # epoch done
    # 5 inner batches, blocks of 2, 3 repeats: the last block (b5) holds one batch
    assert resume_point(13, 5, 3, 2) == (4, 1)


@pytest.mark.parametrize(("num_batches", "repeats", "block"), [(4, 2, 2), (5, 3, 2), (6, 2, 4), (3, 1, 2)])
def test_resume_at_every_position_equals_the_uninterrupted_tail(num_batches, repeats, block):
    whole = list(RepeatedBatches(_inner(num_batches), repeats, block))
    for position in range(len(whole) + 1):
        first = RepeatedBatches(_inner(num_batches), repeats, block)
        served = iter(first)
        for _ in range(position):
            next(served)
        state = first.state_dict()
        assert state["batches_yielded"] == position

        resumed = RepeatedBatches(_inner(num_batches), repeats, block)
        resumed.load_state_dict(json.loads(json.dumps(state)))  # as a checkpoint stores it
        assert list(resumed) == whole[position:]
        assert resumed.state_dict()["batches_yielded"] == len(whole)


def test_set_epoch_passes_through_and_changes_the_order():
    repeated = RepeatedBatches(_inner(6), repeats=2, block=1)
    assert repeated.sampler is repeated  # Lightning calls set_epoch on batch_sampler.sampler
    epoch0 = list(repeated)
    repeated.set_epoch(1)
    assert repeated.batches.epoch == 1
    epoch1 = list(repeated)
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(epoch0)


def test_a_position_counted_under_another_layout_is_refused():
    state = RepeatedBatches(_inner(4), repeats=2, block=2).state_dict()
    with pytest.raises(ValueError, match="Keep the module's num_iterations and the trainer's accumulate_grad_batches"):
        RepeatedBatches(_inner(4), repeats=2, block=1).load_state_dict(state)
    plain = _inner(4).state_dict()  # saved without repetition
    with pytest.raises(ValueError, match="cannot resume mid-epoch"):
        RepeatedBatches(_inner(4), repeats=2, block=1).load_state_dict(plain)


# ---- through Lightning: the data module's batch_repeats with gradient accumulation and a mid-block resume ------


class _Recorder(LightningModule):
    """Records the prompt indices of every training batch; one parameter so there is something to step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.index.tolist())
        return (self.weight - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data(path) -> AlignDataModule:
    return AlignDataModule(
        [DataSource(str(path))], tokenizer=str(TINY_MODEL), task="prompt", max_length=64, batch_size=2, batch_repeats=2
    )


def _fit(data_path, run_dir, max_steps, ckpt_path=None) -> _Recorder:
    """Fit with 2 batches per optimizer step, saving a checkpoint after every step (``step=N.ckpt``)."""
    every_step = ModelCheckpoint(run_dir / "checkpoints", "{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        use_distributed_sampler=False,
        logger=False,
        callbacks=[every_step],
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        default_root_dir=run_dir,
    )
    module = _Recorder()
    trainer.fit(module, datamodule=_data(data_path), ckpt_path=ckpt_path)
    return module


def test_data_module_repeats_accumulation_blocks_and_resumes_mid_block(tmp_path):
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(8)]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole = _fit(path, tmp_path / "whole", max_steps=4)
    b1, b2, b3, b4 = whole.seen[0], whole.seen[1], whole.seen[4], whole.seen[5]
    assert whole.seen == [b1, b2, b1, b2, b3, b4, b3, b4]
    assert len({tuple(b) for b in (b1, b2, b3, b4)}) == 4

    # After step 1, b1 b2 were served once: the resumed run serves them again, then b3 b4 twice.
    resumed = _fit(
        path, tmp_path / "resumed", max_steps=4, ckpt_path=tmp_path / "whole" / "checkpoints" / "step=1.ckpt"
    )
    assert resumed.seen == whole.seen[2:]
