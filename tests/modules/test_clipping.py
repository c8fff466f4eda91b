"""Gradient clipping with the recipes' fused AdamW: under bf16-mixed it clips (Lightning's plugin refused, which
stopped every bf16 recipe at step 1); under 16-mixed, where it cannot be right, a message says what to change."""

from types import SimpleNamespace

import pytest
import torch
from lightning import seed_everything
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.precision import MixedPrecision

from lit_align.checks import ConfigError
from lit_align.data import AlignDataModule, DataSource
from lit_align.modules import SFTModule
from lit_align.modules.clipping import unscales_in_step

from ..conftest import DEMO_DATA, TINY_MODEL


def _norm(parameters) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])).item()


def _fit(precision: str, clip: float, monkeypatch) -> list[float]:
    """Three steps; the gradient norm right after each clipping (empty when nothing clips)."""
    norms, clip_grad_norm = [], torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        result = clip_grad_norm(parameters, max_norm, *args, **kwargs)
        norms.append(_norm(parameters))
        return result

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    seed_everything(3)
    module = SFTModule(str(TINY_MODEL), optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, fused=True))
    data = AlignDataModule(
        train=[DataSource(str(DEMO_DATA / "sft_train.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="sft",
        max_length=64,
        max_truncated_fraction=1.0,  # short rows keep it fast; cut answers do not matter here
        batch_size=4,
    )
    trainer = Trainer(
        max_steps=3,
        precision=precision,
        gradient_clip_val=clip,
        logger=False,
        use_distributed_sampler=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, data)
    return norms


def test_fused_adamw_is_the_kind_lightning_refuses():
    weight = torch.nn.Parameter(torch.ones(2))
    assert unscales_in_step(torch.optim.AdamW([weight], fused=True))
    assert not unscales_in_step(torch.optim.AdamW([weight]))


def test_bf16_mixed_with_fused_adamw_clips_to_the_limit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # logger=False: Lightning writes nothing, the hf/ export goes here
    clipped = _fit("bf16-mixed", clip=1e-3, monkeypatch=monkeypatch)
    assert len(clipped) == 3  # every step clipped, none refused
    assert all(norm == pytest.approx(1e-3, rel=1e-3) for norm in clipped)
    assert _fit("bf16-mixed", clip=0.0, monkeypatch=monkeypatch) == []  # no limit: no clipping


def test_16_mixed_loss_scaling_with_a_fused_optimizer_says_what_to_change():
    module = SFTModule(str(TINY_MODEL))
    plugin = MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))
    module._trainer = SimpleNamespace(precision_plugin=plugin)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], fused=True)
    with pytest.raises(ConfigError, match=r"fused: false, or trainer.precision bf16-mixed"):
        module.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
