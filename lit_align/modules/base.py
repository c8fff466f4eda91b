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
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from lit_align.models.loading import (
    LoraSettings,
    QuantizationSettings,
    add_lora,
    enable_gradient_checkpointing,
    load_causal_lm,
    load_tokenizer,
    prepare_for_kbit_training,
)
from lit_align.models.sharding import (
    check_same_layout,
    decoder_layers,
    full_state_dict,
    is_dtensor,
    is_sharded,
    load_from_rank_zero,
    shard_model,
)
from lit_align.models.zero3 import (
    full_numel,
    gathered_state_dict,
    is_partitioned,
    reset_lora_weights,
    zero3_config,
    zero3_loading,
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
        quantization: Load the frozen weights in 4 bits with bitsandbytes (QLoRA: needs ``lora``);
            ``None`` loads them in ``dtype``.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        optimizer: Optimizer class and arguments (``class_path: torch.optim.AdamW``, ``init_args: {lr: ...}``).
            Biases and norm weights get no weight decay.
        lr_schedule: Warmup and decay of the learning rate, stepped every optimizer step.
        on_nonfinite_loss: What a NaN or infinite training loss does: ``stop`` raises an error naming the step
            and batch; ``skip`` drops that batch (no gradient from it) and counts it in
            ``train/skipped_nonfinite_steps``. Every rank makes the same choice.
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
        quantization: QuantizationSettings | None = None,
        gradient_checkpointing: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule | None = None,
        on_nonfinite_loss: Literal["stop", "skip"] = "stop",
    ) -> None:
        super().__init__()
        self.model_name_or_path = model_name_or_path
        self.tokenizer_path = tokenizer_name_or_path or model_name_or_path
        self.dtype_name = dtype
        self.attn_implementation = attn_implementation
        self.trust_remote_code = trust_remote_code
        self.lora = lora
        self.quantization = quantization if quantization is not None and quantization.load_in_4bit else None
        if self.quantization is not None and lora is None:
            raise ValueError(
                "quantization (QLoRA) needs a LoRA adapter: 4-bit weights cannot be trained. "
                "Set model.init_args.lora, or remove model.init_args.quantization to train every weight."
            )
        if on_nonfinite_loss not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite_loss must be 'stop' or 'skip', got {on_nonfinite_loss!r}")
        self.on_nonfinite_loss = on_nonfinite_loss
        self.skipped_nonfinite_steps = 0
        self._window_batches = self._window_skips = 0
        self.gradient_checkpointing = gradient_checkpointing
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or LRSchedule()
        self.tokenizer = load_tokenizer(self.tokenizer_path, trust_remote_code=trust_remote_code)
        self.policy: torch.nn.Module | None = None
        self._load_empty = False  # set by configure_model on the FSDP2 ranks that receive the weights
        self._slim_sharded_state = False  # set by shard_models: state_dict leaves frozen weights out
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
        # FSDP2: rank zero alone reads the checkpoint; the other ranks build empty models and get their shards
        # from it in shard_models. Under DeepSpeed ZeRO-3 (Lightning runs this inside deepspeed.zero.Init) the
        # models loaded here come out partitioned. Anything loaded later is whole again.
        sharding = self._device_mesh is not None
        self._load_empty = sharding and self.quantization is None and torch.distributed.get_rank() != 0
        try:
            with zero3_loading(zero3_config(self._trainer.strategy) if self._trainer is not None else None):
                model = self.load_model(gradient_checkpointing=self.gradient_checkpointing)
                self.configure_base_model(model)
        finally:
            self._load_empty = False
        if self.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.policy = add_lora(model, self.lora) if self.lora is not None else model
        if self.lora is not None and is_partitioned(self.policy):
            reset_lora_weights(self.policy)
        # from_pretrained returns eval mode. Train mode before the first forward: gradient checkpointing
        # only runs in train mode. (4-bit weights and eval forwards: see prepare_for_kbit_training.)
        self.policy.train()
        if self.lora is not None:
            trainable = sum(full_numel(p) for p in self.policy.parameters() if p.requires_grad)
            total = sum(full_numel(p) for p in self.policy.parameters())
            rank_zero_info(f"LoRA: {trainable:,} trainable of {total:,} parameters ({trainable / total:.2%})")
        if sharding:  # ModelParallelStrategy (configs/strategy/fsdp.yaml)
            self.shard_models(self._device_mesh)
        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, DeepSpeedStrategy) and strategy.exclude_frozen_parameters:
            # DeepSpeed then saves no frozen weights, and loads its checkpoint into the model itself: it must
            # accept their absence (configure_model has loaded them from model_name_or_path already).
            self.strict_loading = False

    def shard_models(self, mesh) -> None:
        """FSDP2 over ``mesh``: the policy and every other model this module holds (the DPO reference copy)
        are sharded alike, layer by layer, then filled from rank zero's weights (unless every rank loaded its
        own: 4-bit models). Trainable weights outside them would get no gradient sync."""
        precision = getattr(self._trainer, "precision", None)
        device = self._trainer.strategy.root_device if self._trainer is not None else torch.device(mesh.device_type)
        from_rank_zero = self.quantization is None
        for name, child in self.named_children():
            if not decoder_layers(child):
                continue
            if from_rank_zero:
                check_same_layout(child, name)
                full_state = child.state_dict() if torch.distributed.get_rank() == 0 else None
            shard_model(child, mesh, precision)
            if from_rank_zero:
                load_from_rank_zero(child, full_state, device)
                del full_state
        # Checkpoints without the frozen weights (state_dict); the strategy must then accept their absence.
        self._slim_sharded_state, self.strict_loading = True, False
        unsharded = [n for n, p in self.named_parameters() if p.requires_grad and not is_dtensor(p)]
        if unsharded:
            raise NotImplementedError(
                f"FSDP2 shards the policy and the reference model only; trainable {unsharded[:3]} live outside "
                "them and would not be synchronised across ranks. Use configs/strategy/ddp.yaml."
            )

    def load_model(self, name_or_path: str | None = None, gradient_checkpointing: bool = False) -> torch.nn.Module:
        """``from_pretrained`` with this module's dtype, attention, trust and quantization settings (the policy,
        and any reference loaded beside it); a quantized model is prepared for k-bit training."""
        model = load_causal_lm(
            name_or_path or self.model_name_or_path,
            empty=self._load_empty,
            dtype=self.dtype_name,
            attn_implementation=self.attn_implementation,
            trust_remote_code=self.trust_remote_code,
            vocab_size=len(self.tokenizer),
            quantization=self.quantization,
        )
        if self.quantization is not None:
            prepare_for_kbit_training(model, gradient_checkpointing=gradient_checkpointing)
        return model

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

    def val_stage(self, dataloader_idx: int = 0) -> str:
        """Metric prefix of a validation loader: ``val`` for the first set, ``val_<name>`` for further ones."""
        names = getattr(self.trainer.datamodule, "val_set_names", None) if self._trainer is not None else None
        return names[dataloader_idx] if names else "val"

    def log_learning_rate(self) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def checked_loss(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        """What ``training_step`` returns: ``loss``, an error, or nothing at all for a NaN or infinite loss.

        Ranks agree first (one rank skipping while the others step would leave DDP's gradient all-reduce
        waiting forever), at the cost of one host sync per step. A skipped batch contributes no gradient; with
        gradient accumulation the other batches of its window still make their optimizer step, and when the
        whole window was skipped the weights and the optimizer's moments stay as they were (the step counter
        and the learning-rate schedule still advance).
        """
        local_bad = not bool(torch.isfinite(loss.detach()).all())
        bad = self.trainer.strategy.reduce_boolean_decision(local_bad, all=False)
        self._window_batches += 1
        if bad and self.on_nonfinite_loss == "stop":
            value = loss.detach().float().max().item() if local_bad else "on another rank"
            raise FloatingPointError(
                f"non-finite loss ({value}) at step {self.trainer.global_step}, batch {batch_idx}: lower the "
                "learning rate, check the data, or set model.init_args.on_nonfinite_loss: skip"
            )
        if bad:
            self.skipped_nonfinite_steps += 1
            self._window_skips += 1
            log.warning("skipped batch %d at step %d: non-finite loss", batch_idx, self.trainer.global_step)
        self.log("train/skipped_nonfinite_steps", float(self.skipped_nonfinite_steps), on_step=True, on_epoch=False)
        if not bad:
            return loss
        if self.trainer.world_size == 1 and not isinstance(self.trainer.strategy, DeepSpeedStrategy):
            return None  # Lightning then skips the backward pass
        # Lightning refuses None with several ranks, and DeepSpeed always. A zero that touches every trainable
        # weight runs the same backward and all-reduce on every rank and adds nothing to the gradients.
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._window_batches and self._window_skips == self._window_batches:
            optimizer.zero_grad(set_to_none=True)  # weights without gradients are left alone by the optimizer
        self._window_batches = self._window_skips = 0

    # ---- checkpoints and export ---------------------------------------------------------------------------

    def _frozen_parameter_names(self) -> set[str]:
        return {name for name, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def _frozen_state_keys(self, state: dict[str, Any]) -> list[str]:
        """Keys of ``state`` that hold frozen weights, with what a 4-bit weight stores beside it (bitsandbytes
        saves ``<weight>.absmax``, ``<weight>.quant_map``, ... but refuses them back in ``load_state_dict``)."""
        frozen = self._frozen_parameter_names()

        def is_frozen(key: str) -> bool:
            parts = key.split(".")
            return any(".".join(parts[:i]) in frozen for i in range(len(parts), 0, -1))

        return [key for key in state if is_frozen(key)]

    def state_dict(self, *args, **kwargs) -> dict[str, Any]:
        """The module's state; for sharded (FSDP2) models, without the frozen weights.

        FSDP2 checkpoints save and load exactly the keys of this dict (distributed checkpointing asks the module
        which tensors it has), so leaving the frozen ones out here keeps a LoRA checkpoint adapter-sized, while a
        trainable weight missing from a checkpoint is still an error. See ``on_save_checkpoint`` for the rest."""
        state = super().state_dict(*args, **kwargs)
        if self._slim_sharded_state and not kwargs.get("prefix"):
            for key in self._frozen_state_keys(state):
                del state[key]
        return state

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave frozen weights out: they are reloaded from ``model_name_or_path``, so a LoRA checkpoint of a
        7B model holds megabytes, not 14 GB. (Sharded models: ``state_dict`` has left them out already;
        DeepSpeed: its ``exclude_frozen_parameters``.)"""
        checkpoint["skipped_nonfinite_steps"] = self.skipped_nonfinite_steps
        if is_sharded(self):
            return
        state = checkpoint["state_dict"]
        for key in self._frozen_state_keys(state):
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # configure_model has already loaded the frozen weights; put them back so strict loading holds.
        self.skipped_nonfinite_steps = checkpoint.get("skipped_nonfinite_steps", 0)
        state = checkpoint.get("state_dict")
        if state is None:
            return  # FSDP2 and DeepSpeed checkpoints: the strategy has loaded the weights itself
        own = self.state_dict()
        for name in self._frozen_parameter_names():
            if name not in state and name in own:
                state[name] = own[name]

    def on_fit_end(self) -> None:
        log_dir = self.trainer.log_dir  # a broadcast under DDP: every rank must ask, not rank zero alone
        state_dict = None
        if log_dir is not None and is_sharded(self.policy):
            # A collective too: rank zero gets the whole weights (with LoRA, the adapter alone).
            state_dict = full_state_dict(self.policy, trainable_only=self.lora is not None)
        elif log_dir is not None and is_partitioned(self.policy):  # DeepSpeed ZeRO-3, the same
            state_dict = gathered_state_dict(self.policy, trainable_only=self.lora is not None)
        if self.trainer.is_global_zero and log_dir is not None:
            out = Path(log_dir) / "hf"
            self.export_pretrained(out, state_dict=state_dict)
            rank_zero_info(f"Hugging Face export written to {out}")
        self.trainer.strategy.barrier()

    def export_pretrained(self, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """``save_pretrained`` of the adapter (with LoRA) or the full model, plus the tokenizer, in safetensors.
        ``state_dict`` replaces the policy's own (the gathered weights of a sharded policy)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        extra = {} if state_dict is None else {"state_dict": state_dict}
        self.policy.save_pretrained(out, safe_serialization=True, **extra)
        self.tokenizer.save_pretrained(out)
