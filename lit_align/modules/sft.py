"""Supervised fine-tuning on chat data: next-token loss on assistant tokens only."""

from __future__ import annotations

import math

import torch

from lit_align.data.batch import SequenceBatch
from lit_align.modules.base import AlignModule


class SFTModule(AlignModule):
    """Token-level cross-entropy averaged over the label tokens of a batch (system and user tokens carry
    label -100, so only assistant turns are learned).

    ``val/loss`` is the mean over every label token of the whole validation set, not a mean of batch means,
    and ``val/ppl = exp(val/loss)``.
    """

    data_task = "sft"

    def __init__(self, model_name_or_path: str, **kwargs) -> None:
        super().__init__(model_name_or_path, **kwargs)
        # Summed over the whole validation set (then over ranks) so val/loss is a mean over tokens. Plain
        # tensors made fresh every validation run: a metric state created under `trainer.validate`'s
        # inference mode could not be updated in place by the validation runs inside `fit`.
        self._val_totals: dict[int, torch.Tensor] = {}

    def token_nll(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed negative log-likelihood of the label tokens and their count."""
        logps, mask = self.label_logps(self.policy, batch.model_inputs(), batch.labels)
        return -logps.sum(), mask.sum()

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> torch.Tensor | None:
        nll, n_tokens = self.token_nll(batch)
        loss = nll / n_tokens.clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log_learning_rate()
        return self.checked_loss(loss, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self._val_totals = {}

    def validation_step(self, batch: SequenceBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        nll, n_tokens = self.token_nll(batch)
        totals = torch.stack([nll.detach().double(), n_tokens.double()])
        self._val_totals[dataloader_idx] = self._val_totals.get(dataloader_idx, 0) + totals

    def on_validation_epoch_end(self) -> None:
        for dataloader_idx, totals in sorted(self._val_totals.items()):
            if self._trainer is not None and self.trainer.world_size > 1:
                totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
            nll_sum, total_tokens = totals.tolist()
            if total_tokens > 0:
                stage = self.val_stage(dataloader_idx)
                loss = torch.tensor(nll_sum / total_tokens)
                self.log(f"{stage}/loss", loss, prog_bar=stage == "val", add_dataloader_idx=False)
                ppl = torch.exp(loss) if loss < 50 else torch.tensor(math.inf)
                self.log(f"{stage}/ppl", ppl, add_dataloader_idx=False)
