"""Direct Preference Optimization and the base of every pairwise preference algorithm.

The module owns the forward passes: chosen and rejected go through the policy in one concatenated batch,
and the reference log-probs come from a frozen copy, from the same model with its LoRA adapter switched
off, from a table computed once before training (`lit_align.modules.reference_cache`), or not at all. The
loss itself is a pure function in ``lit_align.losses``. A new algorithm subclasses this module and overrides
``preference_loss`` alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch

from lit_align.constants import IGNORE_INDEX
from lit_align.losses.dpo import (
    AVERAGED_LOSS_TYPES,
    REFERENCE_FREE_LOSS_TYPES,
    DPOLossType,
    dpo_loss,
    preference_metrics,
)
from lit_align.models.loading import disable_dropout
from lit_align.models.zero3 import is_partitioned
from lit_align.modules.base import AlignModule
from lit_align.modules.logps import sequence_logps
from lit_align.modules.reference_cache import ReferenceTables, lookup_reference_logps, prepare_reference_logps

ReferenceMode = Literal["auto", "copy", "adapter_off", "none", "precomputed"]


@dataclass
class PreferenceLogps:
    """Per-pair sums of completion-token log-probs, and the completion lengths they were summed over."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    chosen_sequence_nll: torch.Tensor | None = None
    """Mean NLL over every token of the chosen sequence, prompt included; only computed when the module sets
    ``needs_chosen_sequence_nll`` (ORPO's NLL term on prompt and answer)."""

    def averaged(self) -> PreferenceLogps:
        """The same log-probs divided by the completion length (per-token averages)."""
        c, r = self.chosen_tokens.clamp(min=1), self.rejected_tokens.clamp(min=1)
        return PreferenceLogps(
            self.policy_chosen / c,
            self.policy_rejected / r,
            self.reference_chosen / c,
            self.reference_rejected / r,
            self.chosen_tokens,
            self.rejected_tokens,
            self.chosen_sequence_nll,
        )


class DPOModule(AlignModule):
    """DPO with a choice of reference.

    Args:
        beta: Strength of the KL penalty towards the reference (the DPO paper's beta).
        loss_type: ``sigmoid`` (the DPO loss), ``robust`` (robust DPO), ``ipo`` (fed per-token-averaged
            log-probs), ``hinge`` or ``simpo`` (per-token-averaged log-probs and no reference: ``reference`` must
            be ``auto`` or ``none``). Formulas in ``lit_align.losses.dpo.dpo_loss``.
        label_smoothing: Assumed probability that a preference label is flipped (conservative DPO for sigmoid
            and simpo, the noise rate for robust).
        simpo_gamma: SimPO's target margin gamma (TRL's ``simpo_gamma``; gamma = beta * the authors'
            ``gamma_beta_ratio``). Only read by ``simpo``.
        length_penalty: R-DPO's alpha: adds ``alpha * (|y_w| - |y_l|)`` (completion tokens) to the margin so the
            policy is not paid for length. 0 turns it off.
        rpo_alpha: RPO's weight of an NLL term on the chosen completion (per-token mean), logged as
            ``nll_loss``. 0 turns it off.
        reference: ``copy`` keeps a frozen copy of the starting model; ``adapter_off`` uses the policy with its
            LoRA adapter switched off (no second copy in memory); ``none`` is reference-free (reference
            log-probs are 0); ``auto`` is ``adapter_off`` with LoRA and ``copy`` without. With ``quantization``,
            ``copy`` loads a second 4-bit model instead of copying the first. ``precomputed`` scores every
            training and validation example with the reference once, at the start of ``fit`` (``validate``: the
            validation examples), keeps the log-probs in a table and a cache file, and trains with no reference
            model in memory (see `lit_align.modules.reference_cache`). It needs the trainer's data module.
        reference_model_name_or_path: Load the frozen copy from elsewhere (e.g. the base model when the policy
            starts from an SFT export). Only with ``reference: copy`` or ``precomputed``.
        reference_cache_dir: Where ``precomputed`` keeps its files (``ref_logps-<sha256>.safetensors``, one per
            split); default ``$XDG_CACHE_HOME/lit_align/reference_logps`` (``~/.cache/...``).
        disable_dropout: Turn dropout off in policy and reference, as TRL does by default.
    """

    data_task = "preference"
    needs_chosen_sequence_nll: bool = False

    def __init__(
        self,
        model_name_or_path: str,
        beta: float = 0.1,
        loss_type: DPOLossType = "sigmoid",
        label_smoothing: float = 0.0,
        simpo_gamma: float = 0.5,
        length_penalty: float = 0.0,
        rpo_alpha: float = 0.0,
        reference: ReferenceMode = "auto",
        reference_model_name_or_path: str | None = None,
        reference_cache_dir: str | None = None,
        disable_dropout: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if loss_type in REFERENCE_FREE_LOSS_TYPES:
            if reference not in ("auto", "none"):
                raise ValueError(f"loss_type {loss_type} is reference-free: set reference: none (or auto)")
            reference = "none"
        if reference == "auto":
            reference = "adapter_off" if self.lora is not None else "copy"
        if reference == "adapter_off" and self.lora is None:
            raise ValueError("reference: adapter_off needs a LoRA adapter (set model.lora) or use reference: copy")
        if reference_model_name_or_path is not None and reference not in ("copy", "precomputed"):
            raise ValueError("reference_model_name_or_path is only used with reference: copy or precomputed")
        if reference_cache_dir is not None and reference != "precomputed":
            raise ValueError("reference_cache_dir is only used with reference: precomputed")
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.simpo_gamma = simpo_gamma
        self.length_penalty = length_penalty
        self.rpo_alpha = rpo_alpha
        self.reference_mode = reference
        self.reference_model_name_or_path = reference_model_name_or_path
        self.reference_cache_dir = reference_cache_dir
        self.disable_dropout = disable_dropout
        self.reference_model: torch.nn.Module | None = None
        self._reference_tables: ReferenceTables = {}  # precomputed: split -> (cache key, [n_examples, 2])

    # ---- models -------------------------------------------------------------------------------------------

    def configure_base_model(self, model: torch.nn.Module) -> None:
        if self.disable_dropout:
            disable_dropout(model)
        if self.reference_mode != "copy":
            return
        if self.reference_model_name_or_path is not None or self.quantization is not None or is_partitioned(model):
            # 4-bit and ZeRO-3 partitioned models are not deep-copied: the copy is a second load of the same
            # weights, 4-bit (float32 norms, as the policy's) or partitioned alike.
            reference = self.load_model(self.reference_model_name_or_path)
        else:
            reference = copy.deepcopy(model)  # before LoRA and checkpointing: the exact starting weights
        reference.requires_grad_(False)
        disable_dropout(reference)
        self.reference_model = reference.eval()

    def configure_model(self) -> None:
        super().configure_model()
        if self.disable_dropout:
            disable_dropout(self.policy)  # LoRA adds dropout layers of its own

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference_model is not None:
            self.reference_model.eval()  # the reference never trains, whatever Lightning switches
        return self

    # ---- precomputed reference ----------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.reference_mode == "precomputed":
            prepare_reference_logps(self, ("train", "val"), self._reference_tables)

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self.reference_mode == "precomputed":
            prepare_reference_logps(self, ("val",), self._reference_tables)

    def reference_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the reference scores for ``batch``: the batch itself (preference-guided DPO: its guided rows)."""
        return batch

    def reference_cache_settings(self) -> dict:
        """What besides the weights, the data and the precision changes the reference log-probs: part of the
        precomputed cache's key. A subclass whose reference sees more (a soft prompt) adds it here."""
        return {}

    # ---- forward ------------------------------------------------------------------------------------------

    def concatenated_logps(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], with_logits: bool = False):
        """One forward of ``[chosen; rejected]``: per-sequence log-prob sums and completion lengths
        (and the logits, when asked)."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps, n_tokens = sequence_logps(logits, batch["labels"])
        return (logps, n_tokens, logits) if with_logits else (logps, n_tokens)

    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.reference_mode == "none":
            return torch.zeros(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        if self.reference_mode == "precomputed":
            return lookup_reference_logps(self._reference_tables, batch)
        with torch.no_grad():
            if self.reference_mode == "copy":
                return self.concatenated_logps(self.reference_model, batch)[0]
            with self.policy.disable_adapter():
                return self.concatenated_logps(self.policy, batch)[0]

    def compute_logps(self, batch: dict[str, torch.Tensor]) -> PreferenceLogps:
        n_pairs = batch["input_ids"].shape[0] // 2
        policy, n_tokens, logits = self.concatenated_logps(self.policy, batch, with_logits=True)
        chosen_sequence_nll = None
        if self.needs_chosen_sequence_nll:
            chosen_ids = batch["input_ids"][:n_pairs]
            every_token = chosen_ids.masked_fill(batch["attention_mask"][:n_pairs] == 0, IGNORE_INDEX)
            total, count = sequence_logps(logits[:n_pairs], every_token)
            chosen_sequence_nll = -total / count.clamp(min=1)
        del logits
        reference = self.reference_logps(batch)
        return PreferenceLogps(
            policy_chosen=policy[:n_pairs],
            policy_rejected=policy[n_pairs:],
            reference_chosen=reference[:n_pairs],
            reference_rejected=reference[n_pairs:],
            chosen_tokens=n_tokens[:n_pairs],
            rejected_tokens=n_tokens[n_pairs:],
            chosen_sequence_nll=chosen_sequence_nll,
        )

    # ---- the one method an algorithm overrides --------------------------------------------------------------

    def preference_loss(self, logps: PreferenceLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss and metrics (TRL names, without the ``train/`` or ``val/`` prefix) for a batch of pairs."""
        summed = logps
        if self.loss_type in AVERAGED_LOSS_TYPES:
            logps = logps.averaged()
        chosen_nll = -summed.policy_chosen / summed.chosen_tokens.clamp(min=1) if self.rpo_alpha else None
        out = dpo_loss(
            logps.policy_chosen,
            logps.policy_rejected,
            logps.reference_chosen,
            logps.reference_rejected,
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
            simpo_gamma=self.simpo_gamma,
            length_penalty=self.length_penalty,
            chosen_lengths=summed.chosen_tokens,
            rejected_lengths=summed.rejected_tokens,
            rpo_alpha=self.rpo_alpha,
            chosen_nll=chosen_nll,
        )
        metrics = preference_metrics(
            out.chosen_rewards, out.rejected_rewards, summed.policy_chosen, summed.policy_rejected
        )
        if chosen_nll is not None:
            metrics["nll_loss"] = chosen_nll.detach().mean()
        return out.losses.mean(), metrics

    # ---- steps --------------------------------------------------------------------------------------------

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        loss, metrics = self.preference_loss(self.compute_logps(batch))
        n_pairs = batch["input_ids"].shape[0] // 2
        training = stage == "train"
        options = {"on_step": training, "on_epoch": not training, "batch_size": n_pairs, "sync_dist": not training}
        options["add_dataloader_idx"] = False  # validation sets are told apart by `stage`
        self.log(f"{stage}/loss", loss, prog_bar=True, **options)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "rewards/accuracies", **options)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        loss = self._shared_step(batch, "train")
        self.log_learning_rate()
        return self.checked_loss(loss, batch_idx)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._shared_step(batch, self.val_stage(dataloader_idx))
