"""``AlignDataModule``: the one place data enters a run.

It prepares every source (read in its format, normalised, de-duplicated, tokenised with the run's tokenizer
and chat template; see `lit_align.data.prepare`), reports what each source contributed and lost, and serves
training batches from a `LengthBucketBatchSampler`: one length bucket per batch so padding stays small,
sources mixed by weight, an optional Chinese share and curriculum, deterministic per seed and epoch, and
resumable mid-epoch because its position is part of this module's ``state_dict`` (saved in checkpoints).

For RL from verifiable rewards (task ``prompt``) it serves prompt batches, left-padded for generation, each batch
``batch_repeats`` times when GRPO takes several steps per rollout (`RepeatedBatches`); expert iteration hands back
the completions it kept (`use_generated_examples`) and trains on those as SFT examples.

This file holds the arguments and their checks; how the splits are prepared (the data cache, ``data.prepared``,
once per node under DDP) is in `lit_align.data.splits`, how they are served in `lit_align.data.serving`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from lightning.pytorch import LightningDataModule

from lit_align.checks import ConfigError, check_at_least, check_between
from lit_align.data.cache import default_cache_dir
from lit_align.data.curriculum import CurriculumStage
from lit_align.data.parallel import default_num_proc
from lit_align.data.prepare import DataSource, PreparedData, PrepareSettings
from lit_align.data.repeat import RepeatedBatches
from lit_align.data.sampler import LengthBucketBatchSampler
from lit_align.data.serving import ServedSplits
from lit_align.data.splits import PreparedSplits

log = logging.getLogger(__name__)

__all__ = ["AlignDataModule", "DataSource"]


class AlignDataModule(PreparedSplits, ServedSplits, LightningDataModule):
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
