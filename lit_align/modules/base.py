"""What every lit_align algorithm shares: loading the model, LoRA, the optimizer and schedule, checkpoints
that hold only what trains, and the Hugging Face export at the end of ``fit``.

An algorithm subclasses one of the concrete modules (``SFTModule``, ``DPOModule``) and overrides the one
method that turns log-probs into a loss; it never touches this file.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from lit_align.models.loading import (
    LoraSettings,
    add_lora,
    enable_gradient_checkpointing,
    load_causal_lm,
    load_tokenizer,
)
from lit_align.optim import LRSchedule, lr_factor, parameter_groups

log = logging.getLogger(__name__)


class AlignModule(LightningModule):
    """Base of the SFT and preference modules.

    Args:
        model_name_or_path: A hub name (``Qwen/Qwen2.5-0.5B-Instruct``) or a local directory, loaded with
            ``AutoModelForCausalLM.from_pretrained``.
        tokenizer_name_or_path: Tokenizer to use when it is not stored with the model.
        dtype: Weight dtype at load time (``bfloat16``, ``float16``, ``float32``, ``auto``); ``None`` keeps
            transformers' default. Mixed precision itself is ``trainer.precision``.
        attn_implementation: Passed to ``from_pretrained`` (``sdpa``, ``flash_attention_2``, ``eager``).
        trust_remote_code: Run model code shipped with a hub repository. Off unless you trust the repository.
        lora: LoRA settings; ``None`` trains every weight.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        optimizer: Optimizer class and arguments (``class_path: torch.optim.AdamW``, ``init_args: {lr: ...}``).
            Biases and norm weights get no weight decay.
        lr_schedule: Warmup and decay of the learning rate, stepped every optimizer step.
    """

    data_task: str = "sft"
    """Which records the data module must produce (``sft`` or ``preference``); linked by the CLI."""

    def __init__(
        self,
        model_name_or_path: str,
        tokenizer_name_or_path: str | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        lora: LoraSettings | None = None,
        gradient_checkpointing: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule | None = None,
    ) -> None:
        super().__init__()
        self.model_name_or_path = model_name_or_path
        self.tokenizer_path = tokenizer_name_or_path or model_name_or_path
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        self.lora = lora
        self.gradient_checkpointing = gradient_checkpointing
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or LRSchedule()
        self.tokenizer = load_tokenizer(self.tokenizer_path, trust_remote_code=trust_remote_code)
        self.policy: torch.nn.Module | None = None
        # Collects the arguments of the whole subclass chain. Plain data only: checkpoints must load with
        # torch.load(weights_only=True), so dataclasses become dicts and the optimizer callable stays out.
        self.save_hyperparameters(ignore=["optimizer"])
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)

    # ---- model construction -------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Load the policy (and whatever the algorithm needs beside it) once, on the target device's rank."""
        if self.policy is not None:
            return
        model = load_causal_lm(
            self.model_name_or_path,
            dtype=self.dtype_name,
            attn_implementation=self.attn_implementation,
            trust_remote_code=self.trust_remote_code,
            vocab_size=len(self.tokenizer),
        )
        self.configure_base_model(model)
        if self.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.policy = add_lora(model, self.lora) if self.lora is not None else model
        # from_pretrained returns eval mode. Train mode before the first forward: gradient checkpointing
        # only runs in train mode, and bitsandbytes 4-bit weights repacked by an eval forward train with
        # silently zero LoRA gradients.
        self.policy.train()
        if self.lora is not None:
            trainable = sum(p.numel() for p in self.policy.parameters() if p.requires_grad)
            total = sum(p.numel() for p in self.policy.parameters())
            rank_zero_info(f"LoRA: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")

    def configure_base_model(self, model: torch.nn.Module) -> None:
        """Hook between loading and LoRA wrapping (the DPO module copies its reference here)."""

    # ---- optimisation -------------------------------------------------------------------------------------

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(parameter_groups(self))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = self.lr_schedule.warmup_for(total)
        factor = partial(
            lr_factor,
            total_steps=total,
            warmup_steps=warmup,
            kind=self.lr_schedule.kind,
            min_lr_ratio=self.lr_schedule.min_lr_ratio,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}}

    def log_learning_rate(self) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    # ---- checkpoints and export ---------------------------------------------------------------------------

    def _frozen_parameter_names(self) -> set[str]:
        return {name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave frozen weights out: they are reloaded from ``model_name_or_path``, so a LoRA checkpoint of a
        7B model holds megabytes, not 14 GB."""
        frozen = self._frozen_parameter_names()
        state = checkpoint["state_dict"]
        for name in frozen:
            state.pop(name, None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # configure_model has already loaded the frozen weights; put them back so strict loading holds.
        state = checkpoint["state_dict"]
        own = self.state_dict()
        for name in self._frozen_parameter_names():
            if name not in state and name in own:
                state[name] = own[name]

    def on_fit_end(self) -> None:
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank must ask, not rank zero alone
        if self.trainer.is_global_zero and log_dir is not None:
            out = Path(log_dir) / "hf"
            self.export_pretrained(out)
            rank_zero_info(f"Hugging Face export written to {out}")
        self.trainer.strategy.barrier()

    def export_pretrained(self, out: str | Path) -> None:
        """``save_pretrained`` of the adapter (with LoRA) or the full model, plus the tokenizer, in safetensors."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
