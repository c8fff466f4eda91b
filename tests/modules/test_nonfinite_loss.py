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
from lit_align.modules.nonfinite import skip_limit

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


def test_stop_names_the_step_and_the_batch_and_what_to_change(tmp_path):
    module = NaNSFT(str(TINY_MODEL), nan_batches=[2])
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 2, batch 2\. ") as error:
        _trainer(tmp_path, max_steps=4).fit(module, datamodule=_data())
    message = str(error.value)
    for advice in ("lower model.init_args.optimizer.init_args.lr", "trainer.gradient_clip_val", "bf16-mixed", "data"):
        assert advice in message
    # Skipping hides a diverging run rather than fixing it: the message does not offer it.
    assert "skip" not in message


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
    checkpoint = torch.load(path, weights_only=True)
    # The skip-share window travels too, so a resumed run counts the skips it had before.
    assert checkpoint["skipped_nonfinite_steps"] == 1 and checkpoint["recent_nonfinite_skips"] == [False, True, False]
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


def test_skip_limit_counts_against_the_window_not_the_batches_seen():
    # floor(fraction * 50): 0.1 -> 5; 0.14 * 50 is 7.000000000000001 in floats, still 7; 0 stops at the first skip.
    assert [skip_limit(f) for f in (0.1, 0.14, 0.0, 1.0)] == [5, 7, 0, 50]


def test_skip_stops_once_more_than_max_skipped_fraction_of_recent_batches_were_skipped(tmp_path):
    # The default 0.1 of 50 allows 5 skipped batches; every batch from 1 on is NaN, so the 6th skip (batch 6) stops.
    module = NaNSFT(str(TINY_MODEL), nan_batches=range(1, 100), on_nonfinite_loss="skip", optimizer=_adamw)
    trainer = _trainer(tmp_path, max_steps=20)
    with pytest.raises(FloatingPointError) as error:
        trainer.fit(module, datamodule=_data())
    message = str(error.value)
    assert message.startswith(
        "6 of the last 7 training batches had a non-finite loss and were skipped (now at step 6, batch 6); "
        "model.init_args.max_skipped_fraction 0.1 allows at most 5 in any 50."
    )
    assert "lower model.init_args.optimizer.init_args.lr" in message
    assert not (tmp_path / "hf").exists()  # nothing was exported


def test_max_skipped_fraction_is_a_setting(tmp_path):
    # 0.2 of 50 allows 10: the same 6 skipped batches of 8 now pass.
    module = NaNSFT(
        str(TINY_MODEL), nan_batches=range(1, 7), on_nonfinite_loss="skip", max_skipped_fraction=0.2, optimizer=_adamw
    )
    trainer = _trainer(tmp_path, max_steps=8)
    trainer.fit(module, datamodule=_data())
    assert trainer.global_step == 8 and module.skipped_nonfinite_steps == 6
    with pytest.raises(ValueError, match=r"model.init_args.max_skipped_fraction must be in \[0, 1\], got 1.5"):
        SFTModule(str(TINY_MODEL), max_skipped_fraction=1.5)


class NaNGradientSFT(SFTModule):
    """SFT whose loss is finite on training batch ``at`` but whose gradient there is NaN: sqrt'(0) = inf, times
    the 0 that made the input, is NaN (in the gradient of the first trainable tensor only)."""

    def __init__(self, model_name_or_path: str, at: int, **kwargs) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.at, self.train_batches = at, 0

    def token_nll(self, batch):
        nll, n_tokens = super().token_nll(batch)
        if self.training:
            if self.train_batches == self.at:
                first = next(p for p in self.parameters() if p.requires_grad)
                nll = nll + torch.sqrt(first.sum() * 0.0)  # adds exactly 0 to the loss
            self.train_batches += 1
        return nll, n_tokens


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_nonfinite_gradient_stops_before_the_step_under_either_policy(tmp_path, policy):
    module = NaNGradientSFT(str(TINY_MODEL), at=1, on_nonfinite_loss=policy, optimizer=_adamw)
    with pytest.raises(FloatingPointError) as error:
        _trainer(tmp_path, max_steps=4).fit(module, datamodule=_data())
    first_name = next(n for n, p in module.named_parameters() if p.requires_grad)
    total = sum(p.requires_grad for p in module.parameters())
    assert str(error.value).startswith(
        f"non-finite gradient at step 1 (1 of {total} trainable tensors, first: {first_name}) although the loss "
        "was finite; the optimizer step was not taken, so the weights are still finite."
    )
    assert all(torch.isfinite(p).all() for p in module.parameters())


class InfOnSecondStep(torch.optim.AdamW):
    """AdamW that writes an infinity into the first weight at its second step, as an fp16 overflow would."""

    steps = 0

    def step(self, closure=None):
        loss = super().step(closure)
        InfOnSecondStep.steps += 1
        if InfOnSecondStep.steps == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return loss


def test_nonfinite_weights_stop_the_run_before_a_checkpoint_holds_them(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    InfOnSecondStep.steps = 0
    module = NaNSFT(str(TINY_MODEL), on_nonfinite_loss="skip", optimizer=lambda p: InfOnSecondStep(p, lr=1e-3))
    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = _trainer(tmp_path, max_steps=4, enable_checkpointing=True, callbacks=[every_step])
    with pytest.raises(FloatingPointError, match=r"non-finite weights after the optimizer step at step 1 \(1 of "):
        trainer.fit(module, datamodule=_data())
    # The checkpoint after the first step exists; the one after the broken second step was never written.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step=1.ckpt"]


class _BreakWeightsAtTrainEnd(Callback):
    """Breaks one trainable weight after training, where no optimizer step can notice it."""

    def on_train_end(self, trainer, pl_module) -> None:
        with torch.no_grad():
            next(p for p in pl_module.parameters() if p.requires_grad).view(-1)[0] = float("nan")


def test_no_export_is_written_from_nonfinite_weights(tmp_path):
    module = NaNSFT(str(TINY_MODEL), optimizer=_adamw)
    trainer = _trainer(tmp_path, max_steps=2, callbacks=[_BreakWeightsAtTrainEnd()])
    with pytest.raises(FloatingPointError) as error:
        trainer.fit(module, datamodule=_data())
    # The broken weight is the input embedding, which tiny-chat ties to the output one: 2 of its 21 tensors.
    assert len(module.policy.state_dict()) == 21
    assert str(error.value).startswith(
        f"not writing the Hugging Face export to {tmp_path / 'hf'}: 2 of 21 tensors hold NaN or inf (first: "
        "model.embed_tokens.weight, lm_head.weight)."
    )
    assert not (tmp_path / "hf").exists()


class _RecordingNaNSFT(NaNSFT):
    """Each rank writes the error it raised (the spawn launcher ends the other ranks once one error arrives, so
    their own exceptions never reach the test)."""

    out_dir = None

    def _check_skip_share(self, step: int, batch_idx: int) -> None:
        try:
            super()._check_skip_share(step, batch_idx)
        except FloatingPointError as error:
            (self.out_dir / f"rank{self.global_rank}.txt").write_text(str(error))
            raise


def test_ddp_ranks_stop_together_when_one_rank_skips_too_often(tmp_path):
    module = _RecordingNaNSFT(
        str(TINY_MODEL), nan_batches=range(1, 100), nan_ranks=[1], on_nonfinite_loss="skip", optimizer=_adamw
    )
    module.out_dir = tmp_path
    strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo", timeout=timedelta(seconds=120))
    trainer = _trainer(tmp_path, max_steps=20, accelerator="cpu", devices=2, strategy=strategy)
    with pytest.raises(Exception, match="6 of the last 7 training batches"):
        trainer.fit(module, datamodule=_data())
    # Rank 0 never saw a NaN, and stopped at the same batch with the same message.
    messages = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert messages[0] == messages[1] and messages[0].startswith("6 of the last 7 training batches")
