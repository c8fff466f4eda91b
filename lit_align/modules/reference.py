"""Where a preference module's reference log-probs come from: one small strategy object per ``reference:`` mode.

- ``copy`` (`CopyReference`): a frozen copy of the starting model, one more model in memory.
- ``adapter_off`` (`AdapterOffReference`): the policy with its LoRA adapter switched off, no second copy.
- ``none`` (`NoReference`): no reference at all (reference-free losses), log-probs of 0.
- ``precomputed`` (`lit_align.modules.reference_cache.PrecomputedReference`): scored once before training,
  looked up by the batch's identity, no reference in memory while training.

Each takes the module's scoring function (model and batch to per-row log-prob sums) rather than the module, so
what a reference reads is exactly what its methods receive.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from lit_align.data.batch import PreferenceBatch
from lit_align.models.loading import disable_dropout
from lit_align.models.zero3 import is_partitioned

ReferenceMode = Literal["auto", "copy", "adapter_off", "none", "precomputed"]
Scorer = Callable[[nn.Module, PreferenceBatch], torch.Tensor]
"""Per-row log-prob sums ``[2n]`` of a batch under a model (the module's forward, soft prompt and all)."""
Loader = Callable[[str | None], nn.Module]
"""Loads a model as the policy was loaded; ``None`` is the policy's own path."""


class Reference(nn.Module):
    """Base of the references. An ``nn.Module`` so that a model it holds moves, shards and casts with the
    LightningModule; its weights are frozen, so checkpoints leave them out."""

    def setup(self, base_model: nn.Module, load: Loader) -> None:
        """Called once with the freshly loaded policy, before LoRA wraps it."""

    def logps(self, batch: PreferenceBatch, score: Scorer, policy: nn.Module) -> torch.Tensor:
        """Reference log-prob sums ``[2n]`` of ``batch``: chosen rows, then rejected rows."""
        raise NotImplementedError


class NoReference(Reference):
    def logps(self, batch: PreferenceBatch, score: Scorer, policy: nn.Module) -> torch.Tensor:
        return torch.zeros(batch.num_sequences, device=batch.input_ids.device)


class AdapterOffReference(Reference):
    def logps(self, batch: PreferenceBatch, score: Scorer, policy: nn.Module) -> torch.Tensor:
        with torch.no_grad(), policy.disable_adapter():
            return score(policy, batch)


class CopyReference(Reference):
    """A frozen copy of the starting weights, or a second load of ``model_name_or_path`` (another model, e.g. the
    base model when the policy starts from an SFT export). 4-bit and ZeRO-3 partitioned models cannot be
    deep-copied, so they are loaded a second time too (4-bit with float32 norms, as the policy's)."""

    def __init__(self, model_name_or_path: str | None = None, must_reload: bool = False) -> None:
        super().__init__()
        self.model_name_or_path = model_name_or_path
        self.must_reload = must_reload
        self.model: nn.Module | None = None

    def setup(self, base_model: nn.Module, load: Loader) -> None:
        if self.model_name_or_path is not None or self.must_reload or is_partitioned(base_model):
            model = load(self.model_name_or_path)
        else:
            model = copy.deepcopy(base_model)  # before LoRA and checkpointing: the exact starting weights
        model.requires_grad_(False)
        disable_dropout(model)
        self.model = model.eval()

    def train(self, mode: bool = True) -> CopyReference:
        super().train(False)  # the reference never trains, whatever Lightning switches
        return self

    def logps(self, batch: PreferenceBatch, score: Scorer, policy: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return score(self.model, batch)


def resolve_reference_mode(mode: ReferenceMode, reference_free: bool, has_lora: bool) -> str:
    """The concrete mode: ``auto`` is ``none`` for a reference-free loss, ``adapter_off`` with LoRA, else ``copy``;
    combinations that cannot work are errors that say what to set."""
    if reference_free:
        if mode not in ("auto", "none"):
            raise ValueError(f"the loss is reference-free: set reference: none (or auto), not {mode!r}")
        return "none"
    if mode == "auto":
        return "adapter_off" if has_lora else "copy"
    if mode == "adapter_off" and not has_lora:
        raise ValueError("reference: adapter_off needs a LoRA adapter (set model.lora) or use reference: copy")
    if mode not in ("copy", "adapter_off", "none", "precomputed"):
        raise ValueError(f"reference must be auto, copy, adapter_off, none or precomputed, got {mode!r}")
    return mode
