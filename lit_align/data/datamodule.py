"""``AlignDataModule``: the one place data enters a run.

It reads every source in whatever format it is in, normalises and de-duplicates the records, tokenises them
with the run's tokenizer and chat template, and serves padded batches. Every record that does not make it
into training is counted under a reason and reported when the data module sets up.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lit_align.data.clean import clean_records
from lit_align.data.collate import PreferenceCollator, SFTCollator
from lit_align.data.read import read_source
from lit_align.data.tokenize import tokenize_preference, tokenize_sft
from lit_align.models.loading import load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class DataSource:
    """One dataset in a recipe's ``data.train`` or ``data.val`` list."""

    path: str
    """A local file (.jsonl, .json, .parquet, .csv) or directory, or a hub dataset name for ``load_dataset``."""
    format: str = "auto"
    """Record format (``messages``, ``sharegpt``, ``alpaca``, ``preference``, ``hh_rlhf``, ...) or ``auto``."""
    name: str | None = None
    """Name in logs and the data card; the file name by default."""
    split: str = "train"
    """Split to read from a hub dataset."""
    weight: float = 1.0
    """Relative sampling weight when sources are mixed."""
    options: dict[str, Any] = field(default_factory=dict)
    """Format options, e.g. ``{min_score_gap: 1.0}`` for UltraFeedback or ``{axis: safer}`` for PKU-SafeRLHF."""


class AlignDataModule(LightningDataModule):
    """Chat (SFT) or preference data for every lit_align module.

    Args:
        train: Training sources.
        val: Validation sources (none: no validation).
        tokenizer: Tokenizer path; linked from the model by the CLI.
        task: ``sft`` or ``preference``; linked from the model by the CLI. Preference records feed SFT as
            prompt + chosen; SFT records cannot feed a preference module.
        max_length: Longest sequence in tokens; longer ones are truncated and counted.
        max_prompt_length: For preference pairs, the prompt keeps at least this many of its last tokens when
            a pair is truncated (default ``max_length // 2``).
        batch_size: Examples (pairs, for preference data) per training batch on each device.
        eval_batch_size: The same for validation (default ``batch_size``).
        max_val_examples: Use only the first N validation examples.
        num_workers: DataLoader worker processes.
        on_error: ``raise`` stops at the first malformed record with its file, line and field; ``skip`` skips
            it and counts it.
        dedupe: Drop exact duplicates (after normalisation), counted.
        pad_to_multiple_of: Round padded lengths up (8 suits tensor cores).
    """

    def __init__(
        self,
        train: list[DataSource],
        val: list[DataSource] | None = None,
        tokenizer: str | None = None,
        task: Literal["sft", "preference"] = "sft",
        max_length: int = 1024,
        max_prompt_length: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_val_examples: int | None = None,
        num_workers: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        dedupe: bool = True,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        super().__init__()
        if tokenizer is None:
            raise ValueError("AlignDataModule needs a tokenizer path (the CLI links it from the model)")
        self.train_sources = list(train)
        self.val_sources = list(val or [])
        self.tokenizer_path = tokenizer
        self.task = task
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_val_examples = max_val_examples
        self.num_workers = num_workers
        self.on_error = on_error
        self.dedupe = dedupe
        self.pad_to_multiple_of = pad_to_multiple_of
        self.tokenizer = None
        self.train_dataset: list[dict] | None = None
        self.val_dataset: list[dict] | None = None
        self.stats: dict[str, Counter] = {}

    # ---- building the datasets ----------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.train_dataset = self._build("train", self.train_sources)
        self.val_dataset = self._build("val", self.val_sources)
        if self.max_val_examples is not None:
            self.val_dataset = self.val_dataset[: self.max_val_examples]
        self._report()

    def _build(self, split: str, sources: list[DataSource]) -> list[dict]:
        counts: Counter = Counter()
        records = []
        for source in sources:
            rows, read_counts = read_source(
                source.path,
                source.format,
                name=source.name,
                split=source.split,
                on_error=self.on_error,
                options=source.options,
            )
            counts.update(read_counts)
            records.extend(rows)
        records, drops = clean_records(records, dedupe=self.dedupe)
        counts.update({f"dropped/{reason}": n for reason, n in drops.items()})
        examples = [example for record in records if (example := self._tokenize(record, counts)) is not None]
        counts["examples"] = len(examples)
        self.stats[split] = counts
        return examples

    def _tokenize(self, record: dict, counts: Counter) -> dict | None:
        if self.task == "preference":
            if "chosen" not in record:
                raise ValueError(
                    f"source {record.get('source')!r} row {record.get('row')} is chat (SFT) data, but this "
                    "module trains on preference pairs: give sources with prompt/chosen/rejected"
                )
            chosen, rejected = tokenize_preference(
                self.tokenizer,
                record["prompt"],
                record["chosen"],
                record["rejected"],
                self.max_length,
                self.max_prompt_length,
            )
            if chosen.n_label_tokens == 0 or rejected.n_label_tokens == 0:
                counts["dropped/no_completion_tokens_after_truncation"] += 1
                return None
            counts["truncated"] += chosen.truncated or rejected.truncated
            return {
                "chosen_input_ids": chosen.input_ids,
                "chosen_labels": chosen.labels,
                "rejected_input_ids": rejected.input_ids,
                "rejected_labels": rejected.labels,
            }
        messages = record["messages"] if "messages" in record else record["prompt"] + record["chosen"]
        example = tokenize_sft(self.tokenizer, messages, self.max_length)
        if example.n_label_tokens == 0:
            counts["dropped/no_assistant_tokens_after_truncation"] += 1
            return None
        counts["truncated"] += example.truncated
        return {"input_ids": example.input_ids, "labels": example.labels}

    def _report(self) -> None:
        for split, counts in self.stats.items():
            if counts:
                details = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                rank_zero_info(f"data[{split}]: {details}")
        logger = self.trainer.logger if self.trainer is not None else None
        if logger is not None:
            metrics = {
                f"data/{split}_{key.replace('/', '_')}": float(value)
                for split, counts in self.stats.items()
                for key, value in counts.items()
            }
            logger.log_metrics(metrics, step=0)

    # ---- loaders ------------------------------------------------------------------------------------------

    def _collator(self):
        kind = PreferenceCollator if self.task == "preference" else SFTCollator
        return kind(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_dataset:
            return []
        return DataLoader(
            self.val_dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
        )
