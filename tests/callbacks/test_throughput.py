"""TokenThroughput in a real Trainer loop: a one-parameter module, batches with known padding, a logger that
records what it is given, and a scripted clock."""

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from lit_align.callbacks import TokenThroughput
from lit_align.data.batch import PreferenceBatch, SequenceBatch

SEVEN_OF_TWELVE = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
THREE_OF_TWELVE = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])


class RecordingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(step, metrics[name]) for step, metrics in self.rows if name in metrics]


class TinyModule(LightningModule):
    """``loss = w * real_tokens / 10`` with ``w = 1``: the gradient is the batch's real-token count over 10."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        loss = (self.weight * batch.attention_mask.sum() / 10).sum()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _loader(masks: list[torch.Tensor], kind: type[SequenceBatch] = SequenceBatch) -> DataLoader:
    batches = [kind(torch.zeros_like(m), m, torch.zeros_like(m)) for m in masks]
    return DataLoader(batches, batch_size=None)


def _script_clock(callback: TokenThroughput, step_seconds: list[float]) -> None:
    """Each optimizer step reads the clock twice (its start, its end); step i starts at 100 * i."""
    ticks = iter(t for i, seconds in enumerate(step_seconds) for t in (100.0 * i, 100.0 * i + seconds))
    callback._clock = lambda: next(ticks)


def _fit(callback, module, masks, max_steps, ckpt_path=None, kind=SequenceBatch, **trainer_args):
    logger = RecordingLogger()
    trainer = Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    trainer.fit(module, _loader(masks, kind), ckpt_path=ckpt_path)
    return trainer, logger


def test_counts_real_tokens_against_the_scripted_clock():
    callback = TokenThroughput()
    _script_clock(callback, [2.0] * 5)
    trainer, logger = _fit(callback, TinyModule(), [SEVEN_OF_TWELVE] * 5, max_steps=5, gradient_clip_val=0.01)

    steps = [0, 1, 2, 3, 4]
    assert logger.series("perf/tokens_per_sec") == [(s, pytest.approx(7 / 2)) for s in steps]
    assert logger.series("perf/samples_per_sec") == [(s, pytest.approx(2 / 2)) for s in steps]  # 2 rows per batch
    assert logger.series("perf/padding_fraction") == [(s, pytest.approx(5 / 12)) for s in steps]
    assert logger.series("perf/step_time") == [(s, pytest.approx(2.0)) for s in steps]
    assert [v for _, v in logger.series("perf/tokens_seen")] == [7, 14, 21, 28, 35]
    assert callback.tokens_seen == 35
    # The gradient is 7 / 10; clipping to 0.01 happens after the hook, so the logged norm is the raw one.
    assert logger.series("perf/grad_norm") == [(s, pytest.approx(0.7)) for s in steps]
    assert all(v > 10 for _, v in logger.series("perf/peak_memory_mb"))
    # perf metrics go out with train/loss, in the same write at the same step.
    assert all("train/loss" in metrics for _, metrics in logger.rows if "perf/tokens_per_sec" in metrics)
    assert "perf/tokens_per_sec" in trainer.progress_bar_metrics and "train/loss" in trainer.progress_bar_metrics


def test_a_preference_sample_is_a_pair():
    callback = TokenThroughput()
    _script_clock(callback, [2.0] * 2)
    # Two rows are one chosen and one rejected sequence: one pair per batch, 2 s per step.
    _, logger = _fit(callback, TinyModule(), [SEVEN_OF_TWELVE] * 2, max_steps=2, kind=PreferenceBatch)
    assert [v for _, v in logger.series("perf/samples_per_sec")] == [pytest.approx(0.5)] * 2


def test_accumulation_logs_once_per_optimizer_step_and_sums_micro_batches():
    callback = TokenThroughput()
    _script_clock(callback, [4.0, 5.0, 8.0])
    masks = [SEVEN_OF_TWELVE, THREE_OF_TWELVE] * 3
    _, logger = _fit(callback, TinyModule(), masks, max_steps=3, accumulate_grad_batches=2)

    # 7 + 3 = 10 real tokens of 24 positions per optimizer step.
    assert logger.series("perf/tokens_per_sec") == [(0, 10 / 4.0), (1, pytest.approx(10 / 5.0)), (2, 10 / 8.0)]
    assert [v for _, v in logger.series("perf/padding_fraction")] == [pytest.approx(14 / 24)] * 3
    assert [v for _, v in logger.series("perf/samples_per_sec")] == pytest.approx([4 / 4.0, 4 / 5.0, 4 / 8.0])
    assert [v for _, v in logger.series("perf/tokens_seen")] == [10, 20, 30]
    # Lightning divides each micro-batch loss by 2: (0.7 + 0.3) / 2.
    assert [v for _, v in logger.series("perf/grad_norm")] == [pytest.approx(0.5)] * 3


def test_tokens_seen_round_trips_state_dict():
    callback = TokenThroughput()
    callback.tokens_seen = 1234
    restored = TokenThroughput()
    restored.load_state_dict(callback.state_dict())
    assert restored.tokens_seen == 1234


def test_tokens_seen_survives_resume(tmp_path):
    first = TokenThroughput()
    trainer, _ = _fit(first, TinyModule(), [SEVEN_OF_TWELVE] * 5, max_steps=3)
    trainer.save_checkpoint(tmp_path / "step3.ckpt")

    resumed = TokenThroughput()
    _, logger = _fit(resumed, TinyModule(), [SEVEN_OF_TWELVE] * 5, 5, ckpt_path=tmp_path / "step3.ckpt")
    assert logger.series("perf/tokens_seen") == [(3, 28), (4, 35)]
