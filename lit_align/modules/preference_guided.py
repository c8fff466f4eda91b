"""Preference-guided DPO: DPO on inputs that carry a preference instruction, and a consistency term that teaches
the unguided policy the same preference, so no instruction is needed at inference.

A subclass of `PreferenceModule` because the forward pass changes: each step runs the policy twice (guided and
plain) and the reference once (guided); the loss is `lit_align.losses.PreferenceGuidedLoss` (``alpha``, and DPO's
arguments for the guided term). The guidance comes in one of two forms:

- ``text``: the instruction is a system message, a data setting (``data.guidance_text``): the data module
  tokenises every pair a second time with it. If the prompt already has a system message, the instruction goes
  first in it, followed by a blank line and the original system text.
- ``embedding``: a soft prompt, ``[n_virtual_tokens, hidden_size]`` from a ``.pt`` file (make one with
  ``scripts/make_soft_prompt.py``), is prepended to the input embeddings; with ``train_soft_prompt`` it is
  trained with the policy (P-tuning) and saved in checkpoints and beside the export as ``soft_prompt.pt``.

The reference sees the guided input too, in both modes: it is the starting model *with the starting guidance*.
In ``embedding`` mode that is the soft prompt as loaded from the file, kept as a frozen copy, even while the
policy's copy trains. So the DPO term measures what training changed, not what the guidance already does: at
step 0 the loss is log 2 as in DPO, and rewards start at 0. Giving the reference the plain input instead would
count the guidance's own effect (for a random soft prompt, noise) as learned reward from step 0; giving it the
live soft prompt would make the reference move during training, which DPO's derivation does not allow.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import PreferenceBatch
from lit_align.losses.base import PreferenceLoss
from lit_align.losses.logps import PreferenceLogps
from lit_align.losses.preference_guided import PreferenceGuidedLoss
from lit_align.modules.preference import PreferenceModule, sequence_totals


def load_soft_prompt(path: str | Path) -> torch.Tensor:
    """The float tensor ``[n_virtual_tokens, hidden_size]`` stored at ``path``, or a ValueError saying what is wrong."""
    hint = "write one with scripts/make_soft_prompt.py"
    if not Path(path).is_file():
        raise ValueError(f"soft prompt file {path} does not exist; {hint}")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"soft prompt file {path} cannot be read by torch.load(weights_only=True): {error}") from error
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"soft prompt file {path} holds a {type(value).__name__}, not a tensor [n_virtual_tokens, hidden_size]"
        )
    if value.ndim != 2 or value.shape[0] == 0 or not value.is_floating_point():
        raise ValueError(
            f"soft prompt file {path} holds a {value.dtype} tensor of shape {tuple(value.shape)}; expected a "
            "floating-point tensor [n_virtual_tokens, hidden_size] with at least one virtual token"
        )
    return value.detach().float()


class PreferenceGuidedDPOModule(PreferenceModule):
    """DPO under a preference instruction plus ``alpha`` times the guided-to-plain consistency term.

    Args:
        guidance: ``text`` (the instruction ``data.guidance_text`` in the system message) or ``embedding`` (a soft
            prompt).
        soft_prompt_path: ``.pt`` file with the soft prompt ``[n_virtual_tokens, hidden_size]``, for
            ``embedding``. Checked when the module is built and, for the hidden size, when the model is loaded.
        train_soft_prompt: Train the soft prompt with the policy (P-tuning). It then sits in the optimizer
            (with weight decay, like every matrix) and in checkpoints. The reference keeps the file's version.

    The loss defaults to ``PreferenceGuidedLoss()`` (``alpha`` 0.01, DPO sigmoid with beta 0.1). Every other
    argument is `PreferenceModule`'s.
    """

    def __init__(
        self,
        model_name_or_path: str,
        guidance: Literal["text", "embedding"] = "text",
        soft_prompt_path: str | None = None,
        train_soft_prompt: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if not self.loss.plain_logps:
            raise ValueError(
                f"{type(self.loss).__name__} does not read the unguided log-probs: this module trains a loss that does "
                "(lit_align.losses.PreferenceGuidedLoss; alpha: 0 is DPO on the guided pairs alone)"
            )
        if guidance not in ("text", "embedding"):
            raise ValueError(f"guidance must be 'text' or 'embedding', got {guidance!r}")
        if guidance == "text" and (soft_prompt_path is not None or train_soft_prompt):
            raise ValueError("soft_prompt_path and train_soft_prompt are for guidance: embedding")
        if guidance == "embedding" and soft_prompt_path is None:
            raise ValueError("guidance: embedding needs soft_prompt_path (write one with scripts/make_soft_prompt.py)")
        self.guidance = guidance
        self.soft_prompt_path = soft_prompt_path
        if guidance == "embedding":
            prompt = load_soft_prompt(soft_prompt_path)
            self.soft_prompt = nn.Parameter(prompt, requires_grad=train_soft_prompt)
            # Not saved: a resumed run reloads the starting soft prompt from the file, as the frozen weights.
            self.register_buffer("reference_soft_prompt", prompt.clone(), persistent=False)
        else:
            self.soft_prompt = self.reference_soft_prompt = None

    def default_loss(self) -> PreferenceLoss:
        return PreferenceGuidedLoss()

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        data_settings = getattr(datamodule, "settings", None)  # AlignDataModule's PrepareSettings
        if self.guidance == "text" and data_settings is not None and data_settings.guidance_text is None:
            raise ValueError(
                "guidance: text trains on pairs with an instruction in the system message: set data.guidance_text "
                'to the instruction (e.g. "Answer in the language of the user\'s question.")'
            )
        if self.guidance == "embedding" and getattr(datamodule, "packing", False):
            raise ValueError("guidance: embedding prepends a soft prompt to padded rows: set data.packing: false")
        if self.guidance == "embedding" and data_settings is not None and data_settings.guidance_text is not None:
            rank_zero_warn("data.guidance_text is unused with guidance: embedding (the soft prompt guides); remove it")

    def configure_model(self) -> None:
        super().configure_model()
        if self.soft_prompt is None:
            return
        hidden_size = self.policy.config.hidden_size
        if self.soft_prompt.shape[1] != hidden_size:
            raise ValueError(
                f"soft prompt file {self.soft_prompt_path} has shape {tuple(self.soft_prompt.shape)}, but model "
                f"{self.model_name_or_path} has hidden size {hidden_size}: expected [n_virtual_tokens, {hidden_size}]"
            )

    # ---- forward ------------------------------------------------------------------------------------------

    def forward_logps(
        self,
        model: nn.Module,
        batch: PreferenceBatch,
        sequence_nll: bool = False,
        soft_prompt: torch.Tensor | None = None,
    ):
        """The preference module's forward, or, with ``soft_prompt``, the same with the soft prompt prepended to
        the input embeddings (attention mask 1 and label -100 on the virtual tokens)."""
        if soft_prompt is None:
            return super().forward_logps(model, batch, sequence_nll)
        if batch.packed or sequence_nll:
            raise ValueError("a soft prompt is prepended to padded rows: it works without data.packing and ORPO's NLL")
        n_rows, n_virtual = batch.input_ids.shape[0], soft_prompt.shape[0]
        embeds = model.get_input_embeddings()(batch.input_ids)  # with LoRA: the PeftModel's (adapter-aware)
        prefix = soft_prompt.to(embeds.dtype).unsqueeze(0).expand(n_rows, -1, -1)
        mask = torch.cat([batch.attention_mask.new_ones(n_rows, n_virtual), batch.attention_mask], dim=1)
        labels = torch.cat([batch.labels.new_full((n_rows, n_virtual), IGNORE_INDEX), batch.labels], dim=1)
        inputs = {"inputs_embeds": torch.cat([prefix, embeds], dim=1), "attention_mask": mask}
        logps, targets = self.label_logps(model, inputs, labels)
        # Target j predicts token j + 1: from index n_virtual on, the targets are the batch's own tokens.
        return sequence_totals(batch, logps[:, n_virtual:], targets[:, n_virtual:])

    def _guided(self, batch: PreferenceBatch) -> PreferenceBatch:
        """The pairs the guided passes read: the batch itself with a soft prompt, its guided rows with text."""
        if self.guidance == "embedding":
            return batch
        if batch.guided is None:
            raise ValueError(
                "guidance: text needs the guided pairs in the batch: set data.guidance_text (AlignDataModule "
                "then tokenises every pair a second time with the instruction)"
            )
        return batch.guided

    def score_reference(self, model: nn.Module, batch: PreferenceBatch) -> torch.Tensor:
        return self.forward_logps(model, self._guided(batch), soft_prompt=self.reference_soft_prompt)[0]

    def reference_key_settings(self) -> dict:
        settings = super().reference_key_settings()
        if self.reference_soft_prompt is None:
            return settings  # text guidance: the guided token ids are part of the data the key hashes
        values = self.reference_soft_prompt.detach().float().cpu().contiguous()
        return {**settings, "reference_soft_prompt_sha256": hashlib.sha256(values.numpy().tobytes()).hexdigest()}

    def compute_logps(self, batch: PreferenceBatch) -> PreferenceLogps:
        guided, n_tokens, _ = self.forward_logps(self.policy, self._guided(batch), soft_prompt=self.soft_prompt)
        reference = self.reference_logps(batch)
        plain = self.forward_logps(self.policy, batch)[0] if self.loss.plain_logps else None
        plain_chosen, plain_rejected = batch.pairs(plain) if plain is not None else (None, None)
        return PreferenceLogps(
            *batch.pairs(guided),
            *batch.pairs(reference),
            *batch.pairs(n_tokens),
            plain_policy_chosen=plain_chosen,
            plain_policy_rejected=plain_rejected,
        )

    # ---- export -------------------------------------------------------------------------------------------

    def export_pretrained(self, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """The policy as every module exports it, plus ``soft_prompt.pt`` in embedding mode (trained or not), so
        the guided policy can be rebuilt; the plain policy, the one to deploy, does not need it."""
        super().export_pretrained(out, state_dict=state_dict)
        if self.soft_prompt is not None:
            torch.save(self.soft_prompt.detach().cpu().clone(), Path(out) / "soft_prompt.pt")
