"""Checkpoints that hold only what trains, and the Hugging Face export at the end of ``fit``.

A mixin of `AlignModule`: frozen weights are reloaded from ``model_name_or_path`` by ``configure_model``, so a
LoRA checkpoint of a 7B model holds megabytes, not 14 GB, under every strategy (single file, FSDP2's sharded
state dict, DeepSpeed's ``exclude_frozen_parameters``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info

from lit_align.models.sharding import full_state_dict, is_sharded
from lit_align.models.zero3 import gathered_state_dict, is_partitioned
from lit_align.modules.nonfinite import nonfinite_names


class SlimCheckpoints(LightningModule):
    """Checkpoint hooks and export for a module with a ``policy``, a ``tokenizer`` and ``lora`` settings."""

    _slim_sharded_state = False  # set by shard_models: state_dict leaves frozen weights out

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
        if is_sharded(self):
            return
        state = checkpoint["state_dict"]
        for key in self._frozen_state_keys(state):
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # configure_model has already loaded the frozen weights; put them back so strict loading holds.
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
        self._refuse_nonfinite_export(log_dir, state_dict)
        if self.trainer.is_global_zero and log_dir is not None:
            out = Path(log_dir) / "hf"
            self.export_pretrained(out, state_dict=state_dict)
            rank_zero_info(f"Hugging Face export written to {out}")
        self.trainer.strategy.barrier()

    def _refuse_nonfinite_export(self, log_dir: str | None, state_dict: dict[str, torch.Tensor] | None) -> None:
        """Raise, on every rank, instead of writing an export that holds NaN or inf. The weights are checked after
        every optimizer step already; this is the last line for whatever got past that (weights loaded broken,
        a module that changes them outside the optimizer). A collective: every rank must call it."""
        bad, total = [], 0
        if self.trainer.is_global_zero and log_dir is not None:
            tensors = state_dict if state_dict is not None else self.policy.state_dict()
            bad, total = nonfinite_names(tensors.items()), len(tensors)
        if self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise FloatingPointError(
                f"not writing the Hugging Face export to {Path(log_dir) / 'hf'}: {len(bad)} of {total} tensors "
                f"hold NaN or inf (first: {shown}). Train again from a checkpoint saved before the weights broke, "
                "or from the start with a lower learning rate."
            )

    def export_pretrained(self, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """``save_pretrained`` of the adapter (with LoRA) or the full model, plus the tokenizer, in safetensors.
        ``state_dict`` replaces the policy's own (the gathered weights of a sharded policy).

        A LoRA export's ``adapter_config.json`` names its base model as the user gave it in
        ``model_name_or_path``: a hub name, or the path as written (``assets/tiny-chat``, relative to the working
        directory of the run), never an absolute path made from it, so a clone or a run folder can be moved.
        ``AutoPeftModelForCausalLM.from_pretrained("<run>/hf")`` then loads from the same working directory as the
        run (for a relative path) or from anywhere (a hub name, an absolute path).
        """
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for config in (getattr(self.policy, "peft_config", None) or {}).values():
            config.base_model_name_or_path = self.model_name_or_path
        extra = {} if state_dict is None else {"state_dict": state_dict}
        self.policy.save_pretrained(out, safe_serialization=True, **extra)
        self.tokenizer.save_pretrained(out)
