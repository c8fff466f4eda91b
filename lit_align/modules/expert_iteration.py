"""Expert iteration (rejection-sampling fine-tuning): sample, keep what is right, fine-tune on it, repeat.

Each round is one epoch. When Lightning builds the epoch's training loader (``reload_dataloaders_every_n_epochs:
1``), the data module asks this module for the round's examples (`AlignDataModule.example_source`): the policy
samples ``num_generations`` completions of every training prompt, the ``accuracy_reward`` keeps those scoring 1,
duplicates of a prompt's kept text are dropped, and at most ``max_per_prompt`` stay per prompt. They go to
``<run dir>/expert_iteration/round_<r>.jsonl`` and become SFT examples (prompt tokens unlabelled, the completion
labelled, exactly the token ids that were sampled), and the epoch trains the SFT loss on them. The next round
samples from the fine-tuned policy. This is the loop of STaR (Zelikman et al. 2022) and ReST-EM (Singh et al.
2023), except that each round continues from the current weights instead of restarting from the base model.

The round's examples are saved in checkpoints, so a resumed run trains on the very examples it was training on.
Because round sizes differ, the number of optimizer steps is unknown in advance: the learning rate is constant
(after warm-up).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_align.checks import ConfigError, check_at_least
from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import SequenceBatch
from lit_align.modules.rollout import RolloutModule
from lit_align.rollouts.generation import prompt_rows

ROUNDS_DIR = "expert_iteration"


class ExpertIterationModule(RolloutModule):
    """Rounds of sampling, filtering by the answer reward, and SFT on the kept completions.

    Args:
        max_per_prompt: Kept completions per prompt at most (after removing duplicates); default all.

    Every argument of `RolloutModule` too: ``num_generations`` is the ``k`` samples per prompt and round,
    ``accuracy_reward`` decides what is kept. Logs ``ei/round``, ``ei/kept_fraction`` (kept completions over
    sampled ones), ``ei/correct_fraction`` (before removing duplicates and the cap), ``ei/prompts_solved_fraction``
    and ``ei/examples`` when a round is sampled, ``train/loss`` (SFT) while it trains.
    """

    def __init__(self, model_name_or_path: str, max_per_prompt: int | None = None, **kwargs) -> None:
        super().__init__(model_name_or_path, **kwargs)
        check_at_least("model.init_args.max_per_prompt", max_per_prompt, 1)
        self.max_per_prompt = max_per_prompt
        self.round_examples: list[dict] = []
        self.round_epoch: int | None = None
        self._round_stats: dict[str, float] = {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        if self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise ConfigError(
                "ExpertIterationModule samples a new round every epoch: set trainer.reload_dataloaders_every_n_epochs: "
                f"1 (got {self.trainer.reload_dataloaders_every_n_epochs})"
            )
        if self.lr_schedule.kind != "constant":
            raise ConfigError(
                "expert iteration rounds differ in size, so the steps of a cosine or linear schedule cannot be known "
                "in advance: set model.init_args.lr_schedule.kind: constant"
            )
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "example_source"):
            raise ConfigError("ExpertIterationModule needs lit_align's AlignDataModule (data:) to train on its rounds")
        datamodule.example_source = self.examples_for_epoch

    # ---- rounds -------------------------------------------------------------------------------------------

    def examples_for_epoch(self, epoch: int) -> list[dict]:
        """The SFT examples of round ``epoch + 1``: sampled now, or restored from a checkpoint of this round."""
        if self.round_epoch != epoch:
            self.round_examples = self.sample_round(epoch)
            self.round_epoch = epoch
        return self.round_examples

    def sample_round(self, epoch: int) -> list[dict]:
        """Sample every training prompt (this rank's share), keep the right answers, gather them from all ranks."""
        datamodule = self.trainer.datamodule
        prompts = datamodule.split_examples("train")
        world, rank = self.trainer.world_size, self.trainer.global_rank
        shard = prompts[rank::world]
        kept, records, sampled, correct, solved, offset = [], [], 0, 0, 0, 0
        for batch in datamodule.examples_dataloader(shard):
            batch.input_ids, batch.attention_mask = (
                batch.input_ids.to(self.device),
                batch.attention_mask.to(self.device),
            )
            completions, _ = self.sample(batch, self.num_generations)
            texts = self.decode(completions)
            right = self.score(self.accuracy, batch, completions, texts).per_func[:, 0] == 1
            n = self.num_generations
            for p, prompt_ids in enumerate(prompt_rows(batch)):
                example, offset = shard[offset], offset + 1
                hits = [i for i in range(p * n, (p + 1) * n) if right[i]]
                sampled, correct, solved = sampled + n, correct + len(hits), solved + bool(hits)
                texts_kept: set[str] = set()
                for i in hits:
                    text = texts[i].strip()
                    if text in texts_kept or (self.max_per_prompt and len(texts_kept) >= self.max_per_prompt):
                        continue
                    texts_kept.add(text)
                    kept.append(_sft_example(prompt_ids, completions.ids[i], example))
                    records.append({"source": batch.sources[p], "prompt": batch.prompts[p], "completion": texts[i]})
        counts = torch.tensor([sampled, correct, solved, len(kept)], dtype=torch.float64, device=self.device)
        if world > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
            kept, records = _gather_lists(kept, world), _gather_lists(records, world)
        sampled, correct, solved, n_kept = counts.tolist()
        self._round_stats = {
            "ei/round": float(epoch + 1),
            "ei/kept_fraction": n_kept / max(sampled, 1),
            "ei/correct_fraction": correct / max(sampled, 1),
            "ei/prompts_solved_fraction": solved * self.num_generations / max(sampled, 1),
            "ei/examples": n_kept,
        }
        self._write_round(epoch + 1, records)
        if not kept:
            raise ConfigError(
                f"expert iteration round {epoch + 1}: none of {int(sampled)} completions was right by "
                f"{self.accuracy.names[0]}, so there is nothing to train on. Start from a model that solves some "
                "prompts (an SFT warm-up), sample more (num_generations), or check the ground truth fields."
            )
        stats = ", ".join(f"{k.removeprefix('ei/')} {v:.3g}" for k, v in self._round_stats.items())
        rank_zero_info(f"expert iteration: {stats}")
        return kept

    def _write_round(self, number: int, records: list[dict]) -> None:
        if not self.trainer.is_global_zero:
            return
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / ROUNDS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"round_{number}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)

    def on_train_epoch_start(self) -> None:
        if self._round_stats:  # logged once per round, at the round's first step
            for name, value in self._round_stats.items():
                self.log(name, value, on_step=False, on_epoch=True, batch_size=1, rank_zero_only=True)

    # ---- training -----------------------------------------------------------------------------------------

    def training_step(self, batch: SequenceBatch, batch_idx: int) -> torch.Tensor | None:
        logps, mask = self.label_logps(self.policy, batch.model_inputs(), batch.labels)
        loss = -logps.sum() / mask.sum().clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch.num_samples)
        self.log_learning_rate()
        return self.checked_loss(loss, batch_idx)

    # ---- checkpoints --------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["expert_iteration"] = {"epoch": self.round_epoch, "examples": self.round_examples}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("expert_iteration")
        if saved:
            self.round_epoch, self.round_examples = saved["epoch"], saved["examples"]


def _sft_example(prompt_ids: list[int], completion_ids: list[int], prompt_example: dict) -> dict:
    """Prompt and completion as one SFT example: only the completion's tokens (as sampled) are learned."""
    return {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
        "length": len(prompt_ids) + len(completion_ids),
        "lang": prompt_example["lang"],
        "source": prompt_example["source"],
    }


def _gather_lists(items: list, world: int) -> list:
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
