"""What every lit_align module shares: building the model (plain, LoRA, QLoRA, FSDP2 shards, ZeRO-3 partitions)
and the optimizer with its schedule.

Checkpoint slimming and the export live in `lit_align.modules.checkpointing`, the non-finite-loss policy in
`lit_align.modules.nonfinite`, gradient clipping with fused optimizers in `lit_align.modules.clipping`. A new loss
never touches any of them: it is a class in `lit_align.losses`.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch.optim.lr_scheduler import LambdaLR

from lit_align.checks import ConfigError, check_at_least, check_between
from lit_align.models.gguf import gguf_to_hf_dir
from lit_align.models.label_logps import label_token_logps
from lit_align.models.loading import (
    LoraSettings,
    ModelSettings,
    QuantizationSettings,
    add_lora,
    enable_gradient_checkpointing,
    load_causal_lm,
    prepare_for_kbit_training,
)
from lit_align.models.packed_attention import PACKED_SDPA, use_packed_sdpa
from lit_align.models.packing import check_packed_attention
from lit_align.models.sharding import check_same_layout, is_dtensor, load_from_rank_zero, shard_model
from lit_align.models.zero3 import full_numel, is_partitioned, reset_lora_weights, zero3_config, zero3_loading
from lit_align.modules.checkpointing import SlimCheckpoints
from lit_align.modules.clipping import FusedOptimizerClipping
from lit_align.modules.nonfinite import NonFiniteLossPolicy
from lit_align.optim import LRSchedule, check_optimizer, lr_factor, parameter_groups
from lit_align.tokenizer import TOKENIZER_FILES, check_model_path, load_tokenizer


class AlignModule(NonFiniteLossPolicy, SlimCheckpoints, FusedOptimizerClipping):
    """Base of the SFT and preference modules.

    Args:
        model_name_or_path: A hub name (``Qwen/Qwen2.5-0.5B-Instruct``) or a local directory, loaded with
            ``AutoModelForCausalLM.from_pretrained``.
        gguf_file: A GGUF file inside ``model_name_or_path`` (a directory or hub repo), e.g.
            ``SmolLM2-135M-Instruct.Q4_1.gguf``; converted once to a cached float32 HF directory, which training
            then loads (`lit_align.models.gguf`). Model, tokenizer, reference and exports all use that directory:
            a LoRA export's ``base_model_name_or_path`` names it.
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
            Biases and norm weights get no weight decay. The recipes set AdamW's ``fused: true`` (one kernel for
            every weight, on CPU and CUDA); torch's default is a loop over weights on CPU, 3.4 times slower here.
        lr_schedule: Warmup and decay of the learning rate, stepped every optimizer step.
        on_nonfinite_loss: What a NaN or infinite training loss does: ``stop`` raises an error naming the step
            and batch; ``skip`` drops that batch (no gradient from it) and counts it in
            ``train/skipped_nonfinite_steps``. Every rank makes the same choice. Under both, a non-finite gradient
            or weight stops the run (see `lit_align.modules.nonfinite`).
        max_skipped_fraction: With ``skip``: the run stops once more than this share of the last 50 training
            batches were skipped (0.1: at most 5 of any 50, and 5 in all while the run is shorter). A run that
            skips more has diverged. 0 stops at the first skip; 1 never stops for skipping alone.
        logps_chunk_size: Label positions whose logits are computed at once. Log-probs come from the final hidden
            states, the output head applied chunk by chunk and recomputed in the backward pass, so the batch's
            full-vocabulary logits never exist (`lit_align.models.label_logps`). ``None`` sizes chunks to 256 MiB of
            float32 logits (441 positions at a 151,936-token vocabulary); 0 takes the model's full logits instead.
    """

    data_task: str = "sft"
    """Which records the data module must produce (``sft``, ``preference`` or ``prompt``); linked by the CLI."""
    batch_repeats: int = 1
    """How many times in a row the data module serves each training batch (GRPO's ``num_iterations``); linked."""

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
        max_skipped_fraction: float = 0.1,
        logps_chunk_size: int | None = None,
        gguf_file: str | None = None,
    ) -> None:
        super().__init__()
        # With a GGUF file, everything downstream (tokenizer, data.tokenizer link, reference, cache keys, exports)
        # sees the converted directory; the hyper-parameters keep what the user wrote (save_hyperparameters reads
        # this frame's arguments, so they are not reassigned).
        model_path = str(gguf_to_hf_dir(model_name_or_path, gguf_file)) if gguf_file else model_name_or_path
        self.model_name_or_path = model_path
        self.tokenizer_path = tokenizer_name_or_path or model_path
        self.lora = lora
        self.quantization = quantization if quantization is not None and quantization.load_in_4bit else None
        self.model_settings = ModelSettings(
            model_path, dtype, attn_implementation, trust_remote_code, quantization=self.quantization
        )
        if self.quantization is not None and lora is None:
            raise ValueError(
                "quantization (QLoRA) needs a LoRA adapter: 4-bit weights cannot be trained. "
                "Set model.init_args.lora, or remove model.init_args.quantization to train every weight."
            )
        if on_nonfinite_loss not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite_loss must be 'stop' or 'skip', got {on_nonfinite_loss!r}")
        check_between("model.init_args.max_skipped_fraction", max_skipped_fraction, 0, 1)
        self.on_nonfinite_loss = on_nonfinite_loss
        self.max_skipped_fraction = max_skipped_fraction
        self.reset_nonfinite_counts()
        self.gradient_checkpointing = gradient_checkpointing
        if logps_chunk_size is not None:
            check_at_least("model.init_args.logps_chunk_size", logps_chunk_size, 0)
        self.logps_chunk_size = logps_chunk_size
        check_optimizer(optimizer)  # a learning rate of 0 or below stops here, not after the model has loaded
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or LRSchedule()
        self.tokenizer = _load_checked_tokenizer(model_path, tokenizer_name_or_path, trust_remote_code)
        self.policy: torch.nn.Module | None = None
        self._packing_checked = False
        self._load_empty = False  # set by configure_model on the FSDP2 ranks that receive the weights
        # Collects the arguments of the whole subclass chain. Plain data only: checkpoints must load with
        # torch.load(weights_only=True), so dataclasses become dicts, and the optimizer callable and the loss
        # object stay out (the run's config.yaml rebuilds them).
        self.save_hyperparameters(ignore=["optimizer", "loss"])
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)
            elif key.endswith("_name_or_path") and key not in _CHECKED_PATHS and isinstance(value, str):
                # A subclass's other models (the preference module's reference): a typo stops the run now.
                check_model_path(value, f"model.init_args.{key}")

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
        for name, child in self.models_to_shard().items():
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

    def models_to_shard(self) -> dict[str, torch.nn.Module]:
        """The models FSDP2 shards, by name: the policy, and whatever model a subclass holds beside it."""
        return {"policy": self.policy}

    def load_model(self, name_or_path: str | None = None, gradient_checkpointing: bool = False) -> torch.nn.Module:
        """``from_pretrained`` with this module's dtype, attention, trust and quantization settings (the policy,
        and any reference loaded beside it); a quantized model is prepared for k-bit training."""
        settings = self.model_settings
        if name_or_path is not None:
            settings = dataclasses.replace(settings, name_or_path=name_or_path)
        model = load_causal_lm(settings, vocab_size=len(self.tokenizer), empty=self._load_empty)
        if self._data_packing() and use_packed_sdpa(model):
            rank_zero_info(f"data.packing: {settings.name_or_path} runs {PACKED_SDPA}")
        if self.quantization is not None:
            prepare_for_kbit_training(model, gradient_checkpointing=gradient_checkpointing)
        return model

    def configure_base_model(self, model: torch.nn.Module) -> None:
        """Hook between loading and LoRA wrapping (the preference module copies its reference here)."""

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

    # ---- packed batches -----------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._check_packing()

    def on_validation_start(self) -> None:
        super().on_validation_start()
        self._check_packing()

    def _data_packing(self) -> bool:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        return bool(getattr(datamodule, "packing", False))

    def _check_packing(self) -> None:
        """With ``data.packing``, once per process: stop unless the model keeps packed sequences apart."""
        if self._data_packing() and not self._packing_checked:
            check_packed_attention(self.policy, self.device)
            self._packing_checked = True

    # ---- log-probs ----------------------------------------------------------------------------------------

    def label_logps(
        self,
        model: torch.nn.Module,
        inputs: dict,
        labels: torch.Tensor,
        entropy: bool = False,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, ...]:
        """Per-target log-probs of ``labels`` under ``model(**inputs)`` and their mask, ``[rows, T - 1]`` each,
        without the batch's full logits (``logps_chunk_size``); with ``entropy``, also the entropy of the model's
        next-token distribution at each target (no gradient). ``temperature`` divides the logits first."""
        return label_token_logps(model, labels, inputs, self.logps_chunk_size, entropy, temperature)

    def val_stage(self, dataloader_idx: int = 0) -> str:
        """Metric prefix of a validation loader: ``val`` for the first set, ``val_<name>`` for further ones."""
        names = getattr(self.trainer.datamodule, "val_set_names", None) if self._trainer is not None else None
        return names[dataloader_idx] if names else "val"

    def log_learning_rate(self) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)


_CHECKED_PATHS = ("model_name_or_path", "tokenizer_name_or_path")  # checked with the tokenizer (after any GGUF)


def _load_checked_tokenizer(model_name_or_path: str, tokenizer_name_or_path: str | None, trust_remote_code: bool):
    """The run's tokenizer, after checking both paths; a path that cannot load is an error naming its setting."""
    check_model_path(model_name_or_path, "model.init_args.model_name_or_path")
    key = "model.init_args.model_name_or_path"
    if tokenizer_name_or_path is not None:
        key = "model.init_args.tokenizer_name_or_path"
        check_model_path(tokenizer_name_or_path, key, files=TOKENIZER_FILES)
    try:
        return load_tokenizer(tokenizer_name_or_path or model_name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:  # no tokenizer files, no chat template, no such hub repository, ...
        raise ConfigError(f"{key}: the tokenizer does not load: {error}") from error
