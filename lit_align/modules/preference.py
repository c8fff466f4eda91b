"""One LightningModule for every pairwise preference loss: DPO and its variants, β-DPO, ORPO, or yours.

The module owns the forward passes: chosen and rejected go through the policy in one concatenated batch, the
reference log-probs come from a strategy object (`lit_align.modules.reference`), and the loss object it is
given (``loss:`` in YAML, a class from `lit_align.losses`) turns the log-probs into a loss and metrics. The loss
says what it needs (no reference, the chosen sequence's NLL), so the module runs nothing it does not need.
A new loss needs no new module; subclass this one only when the forward pass changes (preference-guided DPO).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import PreferenceBatch
from lit_align.losses.base import Gather, PreferenceLoss
from lit_align.losses.dpo import DPOLoss
from lit_align.losses.logps import PreferenceLogps
from lit_align.models.loading import disable_dropout
from lit_align.modules.base import AlignModule
from lit_align.modules.reference import (
    AdapterOffReference,
    CopyReference,
    NoReference,
    Reference,
    ReferenceMode,
    resolve_reference_mode,
)
from lit_align.modules.reference_cache import PrecomputedReference


class PreferenceModule(AlignModule):
    """A preference loss trained on pairs, with a choice of reference.

    Args:
        loss: The loss, a `lit_align.losses.PreferenceLoss` (``DPOLoss``, ``BetaDPOLoss``, ``ORPOLoss``, ...) with
            its hyper-parameters as ``init_args``; default ``DPOLoss()`` (sigmoid, beta 0.1).
        reference: ``copy`` keeps a frozen copy of the starting model; ``adapter_off`` uses the policy with its
            LoRA adapter switched off (no second copy in memory); ``none`` runs no reference (reference log-probs
            are 0); ``auto`` is ``none`` for a reference-free loss (SimPO, ORPO), ``adapter_off`` with LoRA and
            ``copy`` without. With ``quantization``, ``copy`` loads a second 4-bit model instead of copying the
            first. ``precomputed`` scores every training and validation example with the reference once, at the
            start of ``fit`` (``validate``: the validation examples), keeps the log-probs in a table and a cache
            file, and trains with no reference model in memory (`lit_align.modules.reference_cache`). It needs the
            trainer's data module.
        reference_model_name_or_path: Load the reference from elsewhere (e.g. the base model when the policy starts
            from an SFT export). Only with ``reference: copy`` or ``precomputed``.
        reference_cache_dir: Where ``precomputed`` keeps its files (``ref_logps-<sha256>.safetensors``, one per
            split); default ``$XDG_CACHE_HOME/lit_align/reference_logps`` (``~/.cache/...``).
        disable_dropout: Turn dropout off in policy and reference, as TRL does by default.

    Every metric the loss returns is logged under ``train/`` (each step) and ``val/`` (each validation run).
    """

    data_task = "preference"

    def __init__(
        self,
        model_name_or_path: str,
        loss: PreferenceLoss | None = None,
        reference: ReferenceMode = "auto",
        reference_model_name_or_path: str | None = None,
        reference_cache_dir: str | None = None,
        disable_dropout: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.loss = loss if loss is not None else self.default_loss()
        mode = resolve_reference_mode(reference, self.loss.reference_free, self.lora is not None)
        if reference_model_name_or_path is not None and mode not in ("copy", "precomputed"):
            raise ValueError("reference_model_name_or_path is only used with reference: copy or precomputed")
        if reference_cache_dir is not None and mode != "precomputed":
            raise ValueError("reference_cache_dir is only used with reference: precomputed")
        self.reference_mode = mode
        self.reference = self._make_reference(mode, reference_model_name_or_path, reference_cache_dir)
        self.disable_dropout = disable_dropout

    def default_loss(self) -> PreferenceLoss:
        return DPOLoss()

    def _make_reference(self, mode: str, path: str | None, cache_dir: str | None) -> Reference:
        if mode == "copy":
            return CopyReference(path, must_reload=self.quantization is not None)
        if mode == "precomputed":
            settings = self.model_settings if path is None else replace(self.model_settings, name_or_path=path)
            return PrecomputedReference(settings, cache_dir, adapter_off=self.lora is not None and path is None)
        return AdapterOffReference() if mode == "adapter_off" else NoReference()

    # ---- models -------------------------------------------------------------------------------------------

    def configure_base_model(self, model: nn.Module) -> None:
        if self.disable_dropout:
            disable_dropout(model)
        self.reference.setup(model, self.load_model)

    def configure_model(self) -> None:
        super().configure_model()
        if self.disable_dropout:
            disable_dropout(self.policy)  # LoRA adds dropout layers of its own

    def models_to_shard(self) -> dict[str, nn.Module]:
        models = super().models_to_shard()
        if isinstance(self.reference, CopyReference):
            models["reference"] = self.reference.model
        return models

    # ---- precomputed reference ----------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._prepare_reference(("train", "val"))

    def on_validation_start(self) -> None:
        super().on_validation_start()
        self._prepare_reference(("val",))

    def _prepare_reference(self, splits: tuple[str, ...]) -> None:
        if isinstance(self.reference, PrecomputedReference):
            self.reference.prepare(
                splits,
                trainer=self.trainer,
                score=self.score_reference,
                policy=self.policy,
                load=self.load_model,
                key_settings=self.reference_key_settings(),
            )

    def reference_key_settings(self) -> dict:
        """What besides the weights, the data and the precision changes the reference log-probs: part of the
        precomputed cache's key. A subclass whose reference sees more (a soft prompt) adds it here."""
        return {"scored_by": f"{type(self).__module__}.{type(self).__qualname__}", "vocab_size": len(self.tokenizer)}

    # ---- forward ------------------------------------------------------------------------------------------

    def forward_logps(self, model: nn.Module, batch: PreferenceBatch, sequence_nll: bool = False):
        """One forward of every chosen and rejected sequence: ``(log-prob sums, completion lengths, chosen NLL)``,
        the first two ``[2n]``; the third, with ``sequence_nll``, is the mean NLL over every token of each chosen
        sequence, prompt included (``[n]``; else ``None``), from the same forward."""
        labels = batch.labels
        if sequence_nll:  # labels are the input ids where set, so one set of targets serves both sums
            labels = torch.where(batch.chosen_tokens(), batch.every_token_labels(), labels)
        logps, mask = self.label_logps(model, batch.model_inputs(), labels)
        return sequence_totals(batch, logps, mask, sequence_nll)

    def score_reference(self, model: nn.Module, batch: PreferenceBatch) -> torch.Tensor:
        """Per-sequence log-prob sums of ``batch`` as the reference sees it, under ``model`` (the reference
        strategy chooses the model). Preference-guided DPO gives the reference its guided input here."""
        return self.forward_logps(model, batch)[0]

    def reference_logps(self, batch: PreferenceBatch) -> torch.Tensor:
        return self.reference.logps(batch, self.score_reference, self.policy)

    def compute_logps(self, batch: PreferenceBatch) -> PreferenceLogps:
        policy, n_tokens, chosen_sequence_nll = self.forward_logps(self.policy, batch, self.loss.sequence_nll)
        reference = self.reference_logps(batch)
        return PreferenceLogps(
            *batch.pairs(policy), *batch.pairs(reference), *batch.pairs(n_tokens), chosen_sequence_nll
        )

    # ---- steps --------------------------------------------------------------------------------------------

    def _gather(self) -> Gather | None:
        if self._trainer is None or self.trainer.world_size <= 1:
            return None
        return lambda tensor: self.all_gather(tensor).reshape(-1)

    def _shared_step(self, batch: PreferenceBatch, stage: str) -> torch.Tensor:
        self.loss.gather = self._gather()
        loss, metrics = self.loss(self.compute_logps(batch))
        training = stage == "train"
        options = {"on_step": training, "on_epoch": not training, "sync_dist": not training}
        options.update(batch_size=batch.num_pairs, add_dataloader_idx=False)  # val sets differ by `stage`
        self.log(f"{stage}/loss", loss, prog_bar=True, **options)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "rewards/accuracies", **options)
        return loss

    def training_step(self, batch: PreferenceBatch, batch_idx: int) -> torch.Tensor | None:
        loss = self._shared_step(batch, "train")
        self.log_learning_rate()
        return self.checked_loss(loss, batch_idx)

    def validation_step(self, batch: PreferenceBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._shared_step(batch, self.val_stage(dataloader_idx))

    # ---- checkpoints of earlier versions ------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before losses were objects kept β-DPO's rule at ``beta_rule.*`` (and a learnable
        β as ``log_beta``); they load into ``loss.rule.*``."""
        state = checkpoint.get("state_dict") or {}
        for key in [k for k in state if k.startswith("beta_rule.")]:
            value = state.pop(key)
            name = key.removeprefix("beta_rule.")
            if name == "log_beta":
                name, value = "log_scale", value - math.log(getattr(self.loss, "beta", 1.0))
            state[f"loss.rule.{name}"] = value
        super().on_load_checkpoint(checkpoint)


def sequence_totals(batch: PreferenceBatch, logps: torch.Tensor, mask: torch.Tensor, sequence_nll: bool = False):
    """Per-target log-probs ``[rows, T - 1]`` to per-sequence sums and counts (and, with ``sequence_nll``, the
    chosen sequences' mean NLL over the targets in ``mask``, whose completion targets are then kept alone)."""
    chosen_nll = None
    if sequence_nll:
        total, count = batch.pairs(batch.sequence_sums(logps))[0], batch.pairs(batch.sequence_sums(mask.long()))[0]
        chosen_nll = -total / count.clamp(min=1)
        mask = batch.labels[:, 1:] != IGNORE_INDEX
        logps = logps * mask
    return batch.sequence_sums(logps), batch.sequence_sums(mask.long()), chosen_nll
