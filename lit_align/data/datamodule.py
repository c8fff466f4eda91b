"""``AlignDataModule``: the one place data enters a run.

It prepares every source (read in its format, normalised, de-duplicated, tokenised with the run's tokenizer
and chat template; see `lit_align.data.prepare`), reports what each source contributed and lost, and serves
training batches from a `LengthBucketBatchSampler`: one length bucket per batch so padding stays small,
sources mixed by weight, an optional Chinese share and curriculum, deterministic per seed and epoch, and
resumable mid-epoch because its position is part of this module's ``state_dict`` (saved in checkpoints).

For RL from verifiable rewards (task ``prompt``) it serves prompt batches, left-padded for generation, each batch
``batch_repeats`` times when GRPO takes several steps per rollout (`RepeatedBatches`); expert iteration hands back
the completions it kept (`use_generated_examples`) and trains on those as SFT examples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.rank_zero import rank_prefixed_message
from torch.utils.data import DataLoader, DistributedSampler

from lit_align.checks import ConfigError, check_at_least, check_between
from lit_align.data.cache import cache_key, default_cache_dir, load_or_prepare, recipe_fields
from lit_align.data.card import (
    count_metrics,
    expected_mix,
    overlap_warning,
    render_data_card,
    summary_line,
    truncation_warning,
)
from lit_align.data.collate import PreferenceCollator, PromptCollator, SFTCollator
from lit_align.data.curriculum import CurriculumStage
from lit_align.data.loader import ResumableDataLoader
from lit_align.data.parallel import default_num_proc
from lit_align.data.prepare import DataSource, PreparedData, PrepareSettings, effective_bounds, prepare_sources
from lit_align.data.prepared_dir import load_prepared_dir
from lit_align.data.repeat import RepeatedBatches, check_layout
from lit_align.data.sampler import LengthBucketBatchSampler
from lit_align.data.table import column, numbered
from lit_align.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

__all__ = ["AlignDataModule", "DataSource"]


class AlignDataModule(LightningDataModule):
    """Chat (SFT), preference or prompt data for every lit_align module.

    Args:
        train: Training sources. With ``prepared``, optional: given, their names must be the prepared ones and their
            weights are used; left out, the prepared folder's sources and weights are used.
        val: Validation sources (none: no validation). A single path is short for ``[{path: <path>}]``, so
            ``lit_align validate ... --data.val held_out.jsonl`` scores a checkpoint on one file (format auto).
        tokenizer: Tokenizer path; linked from the model by the CLI.
        task: ``sft``, ``preference`` or ``prompt``; linked from the model by the CLI. Preference records feed SFT
            as prompt + chosen; SFT records cannot feed a preference module. ``prompt`` (GRPO, expert iteration)
            reads prompts with a ground truth (``format: auto`` reads a source as ``prompt``, keeping its columns as
            reward fields); chat records give the prompt through the last user turn and their last assistant
            message as the ground truth; preference pairs are refused.
        max_length: Longest sequence in tokens; longer ones are truncated and counted. Prompts (task ``prompt``)
            are never cut: longer ones are dropped and counted (``dropped/prompt_too_long``).
        max_prompt_length: For preference pairs, the prompt keeps at least this many of its last tokens when
            a pair is truncated (default ``max_length // 2``).
        max_truncated_fraction: Largest share of a source's examples that may be cut at ``max_length`` (a
            warning with the count); more stops the run with the longest lengths, since answers cut mid-way
            teach the model to stop mid-sentence. 1.0 allows any.
        batch_size: Examples (pairs, for preference data) per training batch on each device.
        eval_batch_size: The same for validation (default ``batch_size``).
        max_val_examples: Use only the first N validation examples.
        num_workers: DataLoader worker processes.
        on_error: ``raise`` stops at the first malformed record with its file, line and field; ``skip`` skips
            it and counts it in the log and the data card.
        dedupe: Drop exact duplicates (after normalisation, across all sources of a split), counted.
        val_in_train: Validation records that are also training records (after normalisation) are counted
            (``in_train``) with a warning (``warn``), or also dropped from validation (``drop``,
            ``dropped/in_train``). Training data is never touched.
        nfkc: Unicode NFKC normalisation (Chinese full-width punctuation is kept as it is).
        min_zh_ratio: Drop records whose share of Chinese characters is below this (e.g. 0.3), counted.
        target_zh_share: Share of Chinese examples in the training stream (e.g. 0.7); English fills the rest
            and is capped at ``1 - target_zh_share``. ``None``: no language balancing.
        zh_share_tolerance: Allowed deviation from ``target_zh_share`` over any window of 8 batches.
        bucket_bounds: Upper bounds of the length buckets in tokens; bounds at or above ``max_length`` are
            replaced by ``max_length``.
        curriculum: Stages with an end (``until``: batch index, or fraction of the first epoch) and their own
            source or bucket weights.
        seed: Seed of the batch plan (with the epoch, it fixes every batch).
        pad_to_multiple_of: Round padded lengths up (8 suits tensor cores); with ``packing``, the packed row's.
        packing: Padding-free batches: every sequence of a batch end to end in one row, positions restarting at
            0 for each, attention kept inside each sequence (see `lit_align.data.batch`). The same log-probs and
            losses as padded batches, without computing padding. Flash-attention's variable-length kernel runs it
            on GPU; under SDPA or eager attention transformers builds a block-diagonal mask, whose cost grows with
            the square of the row's length. The module checks once that the model keeps packed sequences apart.
        separate_val_sets: With several ``val`` sources, validate each on its own and log the first under
            ``val/`` and the others under ``val_<name>/`` (e.g. ``val_hh_rlhf/rewards/accuracies``).
        guidance_text: Preference data only: also tokenise every pair with this instruction in the system
            message (the batch's ``guided`` pairs), for preference-guided DPO with ``guidance: text``.
        system_prompt: Task ``prompt`` only: the system message of every prompt (a system message of the data
            keeps its text after it).
        prompt_template: Task ``prompt`` only: a ``str.format`` string with one ``{prompt}`` field that wraps the
            last user message, e.g. ``"{prompt}\nGive the final answer after ####."``.
        batch_repeats: Serve every training batch this many times in a row, the batches of one optimizer step
            (``trainer.accumulate_grad_batches``) as a block, so GRPO can take several steps on one batch's
            rollouts; the CLI links it from the module's ``num_iterations``.
        cache: Keep the prepared examples on disk (Arrow, memory-mapped) under a key of everything that shapes them
            (source contents, these settings, the tokenizer and its chat template), so the next run on the same data
            starts without tokenising; see `lit_align.data.cache`. ``false``: prepare in memory every time.
        cache_dir: Where the prepared data goes; default ``$LIT_ALIGN_CACHE/data`` or ``~/.cache/lit_align/data``.
        num_proc: Processes that clean and tokenise the records (default: the cores available, at most 8); the
            examples, their order, the counts and the errors are the same for any number (`lit_align.data.parallel`).
            Sources of fewer than 500 records per process are prepared in one.
        prepared: A folder written by ``scripts/prepare_data.py --output``: train (and validate) on the examples
            prepared there, memory-mapped, without reading any source, so a job can train on data prepared on another
            machine. Its tokenizer and preparation settings must be this recipe's; see `lit_align.data.prepared_dir`.
    """

    def __init__(
        self,
        train: list[DataSource] | None = None,
        val: list[DataSource] | str | None = None,
        tokenizer: str | None = None,
        task: Literal["sft", "preference", "prompt"] = "sft",
        max_length: int = 1024,
        max_prompt_length: int | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_val_examples: int | None = None,
        num_workers: int = 0,
        on_error: Literal["raise", "skip"] = "raise",
        dedupe: bool = True,
        val_in_train: Literal["warn", "drop"] = "warn",
        nfkc: bool = True,
        min_zh_ratio: float | None = None,
        target_zh_share: float | None = None,
        zh_share_tolerance: float = 0.05,
        bucket_bounds: list[int] | None = None,
        curriculum: list[CurriculumStage] | None = None,
        seed: int = 42,
        pad_to_multiple_of: int | None = None,
        packing: bool = False,
        guidance_text: str | None = None,
        separate_val_sets: bool = False,
        max_truncated_fraction: float = 0.2,
        system_prompt: str | None = None,
        prompt_template: str | None = None,
        batch_repeats: int = 1,
        cache: bool = True,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        prepared: str | None = None,
    ) -> None:
        super().__init__()
        if tokenizer is None:
            raise ValueError("AlignDataModule needs a tokenizer path (the CLI links it from the model)")
        if guidance_text is not None and task != "preference":
            raise ValueError("guidance_text adds guided versions of preference pairs; it needs task: preference")
        if val_in_train not in ("warn", "drop"):
            raise ValueError(f"val_in_train must be 'warn' or 'drop', got {val_in_train!r}")
        _check_sizes(max_length, max_prompt_length, batch_size, eval_batch_size, max_val_examples, num_workers)
        _check_shares(min_zh_ratio, target_zh_share, zh_share_tolerance)
        check_at_least("data.pad_to_multiple_of", pad_to_multiple_of, 1)
        check_at_least("data.num_proc", num_proc, 1, why=" (processes that prepare the data)")
        check_at_least("data.batch_repeats", batch_repeats, 1, why=" (linked from the module's num_iterations)")
        if packing and task == "prompt":
            raise ConfigError(
                "data.packing: true is not supported with task prompt: prompts are padded on the left for "
                "generation. Remove data.packing"
            )
        for bound in bucket_bounds or ():
            check_at_least("data.bucket_bounds[...]", bound, 1, why=" (a length in tokens)")
        if train is None and prepared is None:
            raise ConfigError(
                "data.train: no training data. List the sources under data.train, or give data.prepared a folder "
                "written by scripts/prepare_data.py --output"
            )
        self.train_sources = list(train or [])
        self.prepared = Path(prepared).expanduser() if prepared else None
        self.val_sources = [DataSource(path=val)] if isinstance(val, str) else list(val or [])
        self.tokenizer_path = tokenizer
        self.settings = PrepareSettings(
            task=task,
            max_length=max_length,
            max_prompt_length=max_prompt_length,
            bucket_bounds=tuple(bucket_bounds or (256, 1024, 2048)),
            on_error=on_error,
            dedupe=dedupe,
            nfkc=nfkc,
            min_zh_ratio=min_zh_ratio,
            guidance_text=guidance_text,
            drop_in_train=val_in_train == "drop",
            max_truncated_fraction=max_truncated_fraction,
            system_prompt=system_prompt,
            prompt_template=prompt_template,
        )
        self.bounds = list(self.settings.bucket_bounds)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_val_examples = max_val_examples
        self.num_workers = num_workers
        self.target_zh_share = target_zh_share
        self.zh_share_tolerance = zh_share_tolerance
        self.curriculum = list(curriculum or [])
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.packing = packing
        self.separate_val_sets = separate_val_sets
        self.batch_repeats = batch_repeats
        self.cache = cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.num_proc = num_proc or default_num_proc()
        self.tokenizer = None
        self.train_data: PreparedData | None = None
        self.val_data: PreparedData | None = None
        self._sampler: LengthBucketBatchSampler | RepeatedBatches | None = None
        self._pending_sampler_state: dict | None = None
        self._generated: list[dict] | None = None
        self.example_source: Callable[[int], list[dict]] | None = None
        """Set by a module that makes its training examples during the run (expert iteration): called with the
        epoch each time the training loader is built; what it returns goes to `use_generated_examples`."""

    # ---- preparation --------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Prepare the cached splits once per node, before `setup`: Lightning calls this on each node's local rank 0
        while the node's other ranks wait at a barrier, then every rank's `setup` opens the memory-mapped copy (a
        hit), so no rank tokenises what another did. Nothing is kept on ``self``: only that rank runs this.

        With several nodes, ``cache_dir`` decides what "once" means. On node-local disk (``LIT_ALIGN_CACHE`` or
        ``data.cache_dir`` on e.g. ``/tmp``) each node prepares once. The default ``~/.cache`` is often a shared home
        on a cluster: then the per-key file lock serialises the nodes only where ``flock`` reaches the server (NFSv4,
        or NFSv3 with lockd); under ``nolock`` or ``local_lock`` mounts two nodes may both prepare (the atomic rename
        keeps one copy, so the data stays right, but the work is repeated). We do not rely on it: for several nodes
        on shared storage, prepare once ahead (``scripts/prepare_data.py --output DIR``) and give every run
        ``data.prepared: DIR``.

        Without the cache (``data.cache: false``) there is nothing to share: every rank prepares in memory in `setup`.
        """
        if self.train_data is not None or self.prepared is not None:  # set up by hand, or prepared elsewhere
            return
        if not self.cache:
            world_size = self.trainer.world_size if self.trainer is not None else 1
            if world_size > 1:
                rank_zero_warn(
                    f"data.cache: false with {world_size} ranks: each of the {world_size} ranks reads and tokenises "
                    "the data in full; data.cache: true prepares it once per node and the other ranks read that copy"
                )
            return
        tokenizer = load_tokenizer(self.tokenizer_path)

        def prepare(sources: list[DataSource], train_digests: set[str] | None = None) -> PreparedData:
            return prepare_sources(
                sources, tokenizer, self.settings, train_digests=train_digests, num_proc=self.num_proc
            )

        train, train_key = self._prepared("train", self.train_sources, prepare, tokenizer=tokenizer)
        if train_key is not None and self.val_sources:  # a validation split is cached only beside its training split
            digests = train.digests()
            val = lambda sources: prepare(sources, train_digests=digests)  # noqa: E731
            self._prepared("val", self.val_sources, val, depends_on=train_key, tokenizer=tokenizer)

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        if self.prepared is not None:
            self._load_prepared_dir()
        else:
            self.train_data, train_key = self._prepared("train", self.train_sources, self.prepare_split)
            self.val_data, _ = self._prepared(
                "val",
                self.val_sources,
                lambda sources: self.prepare_split(sources, train_digests=self.train_data.digests()),
                depends_on=train_key,
            )
        self._report()
        if self.max_val_examples is not None and len(self.val_data.examples) > self.max_val_examples:
            total = len(self.val_data.examples)
            rank_zero_info(f"validation uses the first {self.max_val_examples} of {total} examples")
            self.val_data.examples = self.val_data.examples[: self.max_val_examples]
        # A stable identity per example: precomputed reference log-probs are looked up by (split, index).
        for split, data in (("train", self.train_data), ("val", self.val_data)):
            data.examples = numbered(data.examples, split)

    def _load_prepared_dir(self) -> None:
        """Both splits from ``data.prepared``, checked against this recipe; the sources are neither read nor hashed,
        and the module's sources become the matched ones, so weights and the data card follow the stored names."""
        start = time.perf_counter()
        loaded = load_prepared_dir(self.prepared, self.train_sources, self.val_sources, self.settings, self.tokenizer)
        self.train_data, self.val_data = loaded.train, loaded.val
        self.train_sources, self.val_sources = loaded.train_sources, loaded.val_sources
        rank_zero_info(
            f"data: train and val from the prepared folder {self.prepared} ({len(self.train_data.examples)} and "
            f"{len(self.val_data.examples)} examples, {time.perf_counter() - start:.1f}s); no source was read"
        )

    def _prepared(
        self, split: str, sources: list[DataSource], prepare: Callable, depends_on: str | None = None, tokenizer=None
    ) -> tuple[PreparedData, str | None]:
        """``prepare(sources)``, through the data cache when it is on; and the cache key (None: not cached). A
        validation split is cached only with its training split's key, since its ``in_train`` counts depend on it.

        A hit is logged once (every rank has the same); a preparation on the rank that made it, with its rank, so
        that a log shows how many ranks prepared (one per node under DDP, see `prepare_data`)."""
        cached = self.cache and sources and (split == "train" or depends_on is not None)
        tokenizer = self.tokenizer if tokenizer is None else tokenizer
        key = cache_key(sources, self.settings, tokenizer, depends_on=depends_on) if cached else None
        if key is None:
            return prepare(sources), None
        start = time.perf_counter()
        recipe = recipe_fields(sources, self.settings, tokenizer)
        data, hit = load_or_prepare(self.cache_dir, key, lambda: prepare(sources), recipe)
        seconds = time.perf_counter() - start
        done = f"{self.cache_dir / key} ({len(data.examples)} examples, {seconds:.1f}s)"
        if hit:
            rank_zero_info(f"data: {split} from cache {done}")
        else:
            _info_on_this_rank(f"data: {split} prepared and cached in {done}", *self._world())
        return data, key

    def split_examples(self, split: str) -> Sequence[dict]:
        """The prepared examples of ``train`` or ``val``, in the order their ``index`` counts."""
        data = {"train": self.train_data, "val": self.val_data}[split]
        return data.examples if data is not None else []

    def prepare_split(
        self, sources: list[DataSource], max_rows: int | None = None, train_digests: set[str] | None = None
    ) -> PreparedData:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_path)
        return prepare_sources(
            sources,
            self.tokenizer,
            self.settings,
            max_rows=max_rows,
            train_digests=train_digests,
            num_proc=self.num_proc,
        )

    def _report(self) -> None:
        metrics = {}
        for split, data in (("train", self.train_data), ("val", self.val_data)):
            for report in data.reports:
                rank_zero_info(summary_line(split, report))
                if warning := overlap_warning(report):
                    rank_zero_warn(warning)
                if warning := truncation_warning(split, report, self.settings.max_length):
                    rank_zero_warn(warning)
            metrics.update(count_metrics(split, data.reports))
        logger = self.trainer.logger if self.trainer is not None else None
        if logger is not None:
            logger.log_metrics(metrics, step=0)

    def data_card(self, num_replicas: int = 1) -> str:
        """``DATA_CARD.md`` for the prepared data and the training sampler's epoch-0 plan."""
        sampler = self.make_train_sampler(num_replicas=num_replicas, rank=0)
        settings = {
            "tokenizer": self.tokenizer_path,
            "task": self.settings.task,
            "max_length": self.settings.max_length,
            "bucket_bounds": self.bounds,
            "batch_size": self.batch_size,
            "target_zh_share": self.target_zh_share,
            "min_zh_ratio": self.settings.min_zh_ratio,
            "max_truncated_fraction": self.settings.max_truncated_fraction,
            "seed": self.seed,
        }
        if self.settings.task == "prompt":
            settings.update(
                system_prompt=self.settings.system_prompt,
                prompt_template=self.settings.prompt_template,
                batch_repeats=self.batch_repeats,
            )
        mix = expected_mix(sampler.plan(), self.train_data.examples, self.bounds)
        splits = {"train": self.train_data.reports, "val": self.val_data.reports}
        return render_data_card(splits, self.bounds, settings, mix)

    # ---- sampling -----------------------------------------------------------------------------------------

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


def _info_on_this_rank(message: str, world_size: int, rank: int) -> None:
    """An info line from whichever rank calls, prefixed with its global rank when there are several; through
    Lightning's logger, so it prints where ``rank_zero_info`` does."""
    logging.getLogger("lightning.pytorch").info(rank_prefixed_message(message, rank) if world_size > 1 else message)


def _check_sizes(max_length, max_prompt_length, batch_size, eval_batch_size, max_val_examples, num_workers) -> None:
    """Sizes that cannot work stop the run when the recipe is read, before any tokenisation."""
    check_at_least("data.max_length", max_length, 1, why=" (tokens per sequence)")
    check_at_least("data.batch_size", batch_size, 1)
    check_at_least("data.eval_batch_size", eval_batch_size, 1)
    check_at_least("data.max_val_examples", max_val_examples, 1, why=" (omit it to validate on every example)")
    check_at_least("data.num_workers", num_workers, 0)
    check_at_least("data.max_prompt_length", max_prompt_length, 1)
    if max_prompt_length is not None and max_prompt_length >= max_length:
        raise ConfigError(
            f"data.max_prompt_length ({max_prompt_length}) must be below data.max_length ({max_length}): "
            "a truncated pair would keep no answer tokens"
        )


def _check_shares(min_zh_ratio, target_zh_share, zh_share_tolerance) -> None:
    check_between("data.min_zh_ratio", min_zh_ratio, 0, 1)
    check_between("data.target_zh_share", target_zh_share, 0, 1)
    check_between("data.zh_share_tolerance", zh_share_tolerance, 0, 1)
