"""How `AlignDataModule` serves its splits: the training batch plan (`LengthBucketBatchSampler`, or
`RepeatedBatches` for GRPO) and its resumable position, the collators, and the train, validation and one-off loaders.

A mixin, so that the data module's file holds its arguments and this one the loaders: the attributes it reads are
set by `AlignDataModule.__init__` and `lit_align.data.splits.PreparedSplits.setup`.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from lit_align.data.collate import PreferenceCollator, PromptCollator, SFTCollator
from lit_align.data.loader import ResumableDataLoader
from lit_align.data.prepare import effective_bounds
from lit_align.data.repeat import RepeatedBatches, check_layout
from lit_align.data.sampler import LengthBucketBatchSampler
from lit_align.data.table import column


class ServedSplits:
    """The samplers, their state and the loaders of `AlignDataModule`."""

    def source_weights(self) -> dict[str, float] | None:
        """Sampling weight per source name, or None (proportional to size) when no source sets a weight."""
        if all(source.weight is None for source in self.train_sources):
            return None
        return {
            report.name: 1.0 if source.weight is None else source.weight
            for source, report in zip(self.train_sources, self.train_data.reports, strict=True)
        }

    def make_train_sampler(
        self, num_replicas: int, rank: int, examples: Sequence[dict] | None = None
    ) -> LengthBucketBatchSampler:
        """The training batch plan over the prepared examples, or over ``examples`` made during the run (expert
        iteration's): those get no curriculum, weights for the sources they hold only, and a last bucket as long as
        the longest (a prompt with its completion may pass ``max_length``)."""
        generated = examples is not None
        examples = self.train_data.examples if examples is None else examples
        lengths, sources = column(examples, "length"), column(examples, "source")
        weights = self.source_weights()
        bounds = self.bounds
        if generated:
            weights = {name: w for name, w in (weights or {}).items() if name in set(sources)}
            weights = weights if any(w > 0 for w in weights.values()) else None
            bounds = effective_bounds(self.bounds, max(self.settings.max_length, *lengths))
            if len(examples) < self.batch_size * num_replicas:
                rank_zero_warn(
                    f"only {len(examples)} generated examples, fewer than one batch of {self.batch_size} on each of "
                    f"{num_replicas} device(s): this epoch trains on nothing"
                )
        sampler = LengthBucketBatchSampler(
            lengths,
            self.batch_size,
            languages=column(examples, "lang"),
            sources=sources,
            bucket_bounds=bounds,
            source_weights=weights,
            target_zh_share=self.target_zh_share,
            zh_share_tolerance=self.zh_share_tolerance,
            curriculum=None if generated else self.curriculum or None,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
            drop_last=True,
        )
        if generated:
            sampler.set_epoch(self.trainer.current_epoch if self.trainer is not None else 0)
        return sampler

    def state_dict(self) -> dict:
        """The sampler's position, so a resumed run continues mid-epoch with the very next batch."""
        if self._sampler is None:
            return {}
        state = self._sampler.state_dict()
        if self.trainer is not None:
            # Workers prefetch ahead of training: count the batches the loop has actually processed.
            state["batches_yielded"] = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"sampler": state}

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending_sampler_state = state_dict.get("sampler")
        if self._sampler is not None and self._pending_sampler_state is not None:
            self._sampler.load_state_dict(self._pending_sampler_state)

    # ---- loaders ------------------------------------------------------------------------------------------

    def _collator(self):
        if self.settings.task == "prompt":
            return PromptCollator(self.tokenizer.pad_token_id)
        kind = PreferenceCollator if self.settings.task == "preference" else SFTCollator
        return kind(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.packing)

    def examples_dataloader(self, examples: list[dict]) -> DataLoader:
        """``examples`` in the order given, ``eval_batch_size`` at a time, padded by the run's collator: for
        one-off passes over a split, such as precomputing the reference log-probs."""
        return DataLoader(
            examples,
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
        )

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        num_replicas, rank = self._world()
        if self.example_source is not None:
            self.use_generated_examples(self.example_source(self.trainer.current_epoch if self.trainer else 0))
        if self._generated is None:
            examples, collator = self.train_data.examples, self._collator()
            sampler = self.make_train_sampler(num_replicas, rank)
        else:
            examples, collator = self._generated, SFTCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)
            sampler = self.make_train_sampler(num_replicas, rank, self._generated)
        if self.batch_repeats > 1:
            block = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
            sampler = RepeatedBatches(sampler, self.batch_repeats, block)
        self._sampler = sampler
        if self._pending_sampler_state is not None:
            if self.batch_repeats == 1:
                check_layout(self._pending_sampler_state, 1, 1)
            self._sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None
        return ResumableDataLoader(
            examples, batch_sampler=self._sampler, collate_fn=collator, num_workers=self.num_workers
        )

    def use_generated_examples(self, examples: list[dict]) -> None:
        """From the next ``train_dataloader()`` call on, train on these SFT examples (``input_ids``, ``labels``,
        ``length``, ``lang``, ``source``) instead of the prepared ones: expert iteration hands over the completions
        it kept each round (with ``reload_dataloaders_every_n_epochs: 1``). They are batched like SFT data, by a
        `LengthBucketBatchSampler` with the run's seed and the trainer's epoch, and numbered with split
        ``generated``, so nothing mistakes them for train examples; ``split_examples("train")`` stays the prompts."""
        required = ("input_ids", "labels", "length", "lang", "source")
        if not examples:
            raise ValueError("use_generated_examples got no examples: there is nothing to train on this round")
        for number, example in enumerate(examples):
            if missing := [key for key in required if key not in example]:
                raise ValueError(f"generated example {number} lacks {missing}; each needs {list(required)}")
        self._generated = [{**example, "index": i, "split": "generated"} for i, example in enumerate(examples)]

    @property
    def val_set_names(self) -> list[str]:
        """Metric prefixes of the validation loaders: ``val`` for the first set, ``val_<source name>`` for the
        others when ``separate_val_sets`` is on and there are several sources."""
        reports = self.val_data.reports if self.val_data is not None else []
        if not self.separate_val_sets or len(reports) < 2:
            return ["val"]
        return ["val"] + [f"val_{report.name}" for report in reports[1:]]

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_data.examples:
            return []
        if len(self.val_set_names) == 1:
            return self._val_loader(self.val_data.examples)
        by_source = {report.name: [] for report in self.val_data.reports}
        for example in self.val_data.examples:
            by_source[example["source"]].append(example)
        return [self._val_loader(examples) for examples in by_source.values()]

    def _val_loader(self, examples: list[dict]) -> DataLoader:
        num_replicas, rank = self._world()
        sampler = None
        if num_replicas > 1:
            sampler = DistributedSampler(examples, num_replicas, rank, shuffle=False)
        return DataLoader(
            examples,
            batch_size=self.eval_batch_size,
            sampler=sampler,
            shuffle=False,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
        )
