"""How `AlignDataModule` gets its train and validation splits: from a prepared folder (``data.prepared``), from the
data cache, or prepared now; once per node under DDP (`prepare_data`), with a report of what each source gave.

A mixin, so that the data module's file holds its arguments and this one the order of preparation: the attributes
it reads (``settings``, ``cache``, ``num_proc``, the sources...) are set by `AlignDataModule.__init__`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.rank_zero import rank_prefixed_message

from lit_align.data.cache import cache_key, folder_size, load_or_prepare, recipe_fields
from lit_align.data.card import (
    count_metrics,
    expected_mix,
    overlap_warning,
    render_data_card,
    summary_line,
    truncation_warning,
)
from lit_align.data.prepare import DataSource, PreparedData, prepare_sources
from lit_align.data.prepared_dir import load_prepared_dir
from lit_align.data.table import numbered
from lit_align.tokenizer import load_tokenizer


class PreparedSplits:
    """``prepare_data``, ``setup``, the set-up report and the data card of `AlignDataModule`."""

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

        # A hit here is logged by `setup`, which every rank runs next.
        train, train_key = self._prepared("train", self.train_sources, prepare, tokenizer=tokenizer, log_hit=False)
        if train_key is not None and self.val_sources:  # a validation split is cached only beside its training split
            digests = train.digests()
            val = lambda sources: prepare(sources, train_digests=digests)  # noqa: E731
            self._prepared("val", self.val_sources, val, depends_on=train_key, tokenizer=tokenizer, log_hit=False)

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
        self,
        split: str,
        sources: list[DataSource],
        prepare: Callable,
        depends_on: str | None = None,
        tokenizer=None,
        log_hit: bool = True,
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
            if log_hit:
                rank_zero_info(f"data: {split} from cache {done}")
        elif (self.cache_dir / key).is_dir():
            size = folder_size(self.cache_dir / key) / 2**20
            message = f"data: {split} prepared and cached in {done}, {size:.0f} MB on disk"
            _info_on_this_rank(message, *self._world())
        else:  # the cache folder could not be written (the warning says why)
            _info_on_this_rank(f"data: {split} prepared, not cached ({len(data.examples)} examples)", *self._world())
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


def _info_on_this_rank(message: str, world_size: int, rank: int) -> None:
    """An info line from whichever rank calls, prefixed with its global rank when there are several; through
    Lightning's logger, so it prints where ``rank_zero_info`` does."""
    logging.getLogger("lightning.pytorch").info(rank_prefixed_message(message, rank) if world_size > 1 else message)
