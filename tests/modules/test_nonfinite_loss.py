"""A NaN loss through a real ``Trainer.fit``: ``stop`` names the step, ``skip`` drops the batch, counts it, keeps
the count across resume, and makes every DDP rank skip together."""

from datetime import timedelta

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.strategies import DDPStrategy

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.losses import DPOLoss, LossOutput
from lit_align.modules import PreferenceModule, SFTModule

from ..conftest import DEMO_DATA, TINY_MODEL


class NaNSFT(SFTModule):
    """SFT whose training loss is NaN on the given training batches (counted from 0 across the run), on the given
    ranks."""

    def __init__(self, model_name_or_path: str, nan_batches=(), nan_ranks=None, **kwargs) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.nan_batches, self.nan_ranks, self.train_batches = set(nan_batches), nan_ranks, 0

    def token_nll(self, batch):
        nll, n_tokens = super().token_nll(batch)
        if self.training:
            on_this_rank = self.nan_ranks is None or self.global_rank in self.nan_ranks
            if self.train_batches in self.nan_batches and on_this_rank:
                nll = nll * float("nan")
            self.train_batches += 1
        return nll, n_tokens


class NaNOnSecondBatchDPO(DPOLoss):
    """DPO whose loss is NaN on the second training batch (step 1 without gradient accumulation)."""

    def __init__(self) -> None:
        super().__init__()
        self.train_batches = 0

    def forward(self, logps):
        loss, metrics = super().forward(logps)
        if self.training:
            self.train_batches += 1
            if self.train_batches == 2:
                loss = loss * float("nan")
        return LossOutput(loss, metrics)


class _StepRecorder(Callback):
    """Weights before and after every training batch."""

    def __init__(self) -> None:
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []

    @staticmethod
    def _weights(module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in module.parameters() if p.requires_grad]).clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before.append(self._weights(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(self._weights(pl_module))


def _data(task: str = "sft") -> AlignDataModule:
    name = "sft_val.jsonl" if task == "sft" else "dpo_val.jsonl"
    return AlignDataModule(
        [DataSource(str(DEMO_DATA / name))], tokenizer=str(TINY_MODEL), task=task, max_length=128, batch_size=2
    )


def _trainer(tmp_path, max_steps: int, **kwargs) -> Trainer:
    options = {
        "max_steps": max_steps,
        "limit_val_batches": 0,
        "use_distributed_sampler": False,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        **kwargs,
    }
    return Trainer(**options)


def _adamw(params):
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)


def test_stop_names_the_step_and_the_batch(tmp_path):
    module = NaNSFT(str(TINY_MODEL), nan_batches=[2])
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 2, batch 2: .*on_nonfinite_loss"):
        _trainer(tmp_path, max_steps=4).fit(module, datamodule=_data())


def test_stop_is_the_default_for_dpo_too(tmp_path):
    module = PreferenceModule(str(TINY_MODEL), loss=NaNOnSecondBatchDPO(), reference="none")
    assert module.on_nonfinite_loss == "stop"
    with pytest.raises(FloatingPointError, match="at step 1, batch 1"):
        _trainer(tmp_path, max_steps=3).fit(module, datamodule=_data("preference"))


def test_skip_leaves_the_weights_alone_counts_and_survives_resume(tmp_path):
    module = NaNSFT(str(TINY_MODEL), nan_batches=[1], on_nonfinite_loss="skip", optimizer=_adamw)
    recorder = _StepRecorder()
    trainer = _trainer(tmp_path, max_steps=3, callbacks=[recorder])
    trainer.fit(module, datamodule=_data())

    assert trainer.global_step == 3 and module.skipped_nonfinite_steps == 1
    assert trainer.callback_metrics["train/skipped_nonfinite_steps"] == 1
    # AdamW with momentum and weight decay moves every weight on a step it takes; the skipped one moved nothing.
    assert torch.equal(recorder.before[1], recorder.after[1])
    assert not torch.equal(recorder.before[0], recorder.after[0])
    assert not torch.equal(recorder.before[2], recorder.after[2])
    assert all(torch.isfinite(p).all() for p in module.parameters())

    path = tmp_path / "skipped.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["skipped_nonfinite_steps"] == 1
    resumed = NaNSFT(str(TINY_MODEL), on_nonfinite_loss="skip", optimizer=_adamw)
    resumed_trainer = _trainer(tmp_path, max_steps=4)
    resumed_trainer.fit(resumed, datamodule=_data(), ckpt_path=path)
    assert resumed_trainer.global_step == 4 and resumed.skipped_nonfinite_steps == 1
    assert resumed_trainer.callback_metrics["train/skipped_nonfinite_steps"] == 1


def test_skip_with_gradient_accumulation_drops_only_the_bad_batch(tmp_path):
    # Windows of two batches: (0, 1) steps on batch 0 alone, (2, 3) is all NaN and leaves the weights alone.
    module = NaNSFT(str(TINY_MODEL), nan_batches=[1, 2, 3], on_nonfinite_loss="skip", optimizer=_adamw)
    recorder = _StepRecorder()
    trainer = _trainer(tmp_path, max_steps=3, accumulate_grad_batches=2, callbacks=[recorder])
    trainer.fit(module, datamodule=_data())

    assert trainer.global_step == 3 and module.skipped_nonfinite_steps == 3
    assert not torch.equal(recorder.before[0], recorder.after[1])  # batch 0's gradient was applied
    assert torch.equal(recorder.before[2], recorder.after[3])
    assert not torch.equal(recorder.before[4], recorder.after[5])
    assert all(torch.isfinite(p).all() for p in module.parameters())


class _RankReport(Callback):
    def __init__(self, out_dir) -> None:
        self.out_dir = out_dir
        self.recorder = _StepRecorder()

    def on_train_batch_start(self, *args) -> None:
        self.recorder.on_train_batch_start(*args)

    def on_train_batch_end(self, *args) -> None:
        self.recorder.on_train_batch_end(*args)

    def on_train_end(self, trainer, pl_module) -> None:
        report = {
            "skipped": pl_module.skipped_nonfinite_steps,
            "step1_unchanged": torch.equal(self.recorder.before[1], self.recorder.after[1]),
            "weights": self.recorder.after[-1],
        }
        torch.save(report, self.out_dir / f"rank{trainer.global_rank}.pt")


def test_ddp_ranks_skip_together_when_one_rank_sees_nan(tmp_path):
    module = NaNSFT(str(TINY_MODEL), nan_batches=[1], nan_ranks=[1], on_nonfinite_loss="skip", optimizer=_adamw)
    strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=120))
    trainer = _trainer(
        tmp_path, max_steps=3, accelerator="cpu", devices=2, strategy=strategy, callbacks=[_RankReport(tmp_path)]
    )
    trainer.fit(module, datamodule=_data())

    reports = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [r["skipped"] for r in reports] == [1, 1]  # rank 0's loss was finite, and it skipped all the same
    assert all(r["step1_unchanged"] for r in reports)
    assert torch.equal(reports[0]["weights"], reports[1]["weights"])
