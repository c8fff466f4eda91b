"""From sources to tokenised examples, with a count for every record that does not make it.

This is the whole preparation pipeline, shared by the data module (at set-up) and ``scripts/prepare_data.py``
(which writes the records and the data card): read each source in its format, normalise, filter and
de-duplicate across sources, tokenise with the run's tokenizer and chat template, and measure every example's
real token length for the length buckets. Each source gets a `SourceReport`, so the data card can say where
every row went.

Two outcomes stop preparation rather than let a run train on something other than what the user meant: a
source that gives no examples at all, and one whose examples are mostly cut at ``max_length`` (more than
``max_truncated_fraction``): a model trained on answers cut in the middle learns to stop mid-sentence. Prompts
(task ``prompt``) are never cut but dropped, and the same limit applies to the share dropped.

Under task ``prompt`` a source with ``format: auto`` is read as ``prompt``, so its columns reach the reward
functions; a source declared in an SFT format gives its chat records, whose last assistant turn becomes the ground
truth (`as_prompt_record`).
"""

from __future__ import annotations

import bisect
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lit_align.checks import ConfigError
from lit_align.data.clean import record_hash
from lit_align.data.errors import DataFormatError, FieldError
from lit_align.data.parallel import Outcome, prepared_chunks
from lit_align.data.read import read_source, source_name
from lit_align.data.table import RowCollector

TASKS = ("sft", "preference", "prompt")


@dataclass
class DataSource:
    """One dataset in a recipe's ``data.train`` or ``data.val`` list."""

    path: str
    """A local file (.jsonl, .json, .parquet, .csv; ``~`` is expanded) or directory, or a hub dataset name for
    ``load_dataset``. A path that cannot be a hub id (``./x``, ``x/``, ``data/x`` when ``data/`` exists, a data
    file suffix) and does not exist is an error at once, not a hub request."""
    format: str = "auto"
    """Record format (``messages``, ``sharegpt``, ``alpaca``, ``preference``, ``hh_rlhf``, ...) or ``auto``."""
    name: str | None = None
    """Name in logs and the data card; the file name by default. Names must differ between sources."""
    split: str = "train"
    """Split to read from a hub dataset."""
    subset: str | None = None
    """Configuration (subset) name of a hub dataset, the second argument of ``load_dataset``."""
    weight: float | None = None
    """Relative sampling weight. When no source sets one, sources mix in proportion to their size; when some do,
    unset weights count as 1.0."""
    options: dict[str, Any] = field(default_factory=dict)
    """Format options, e.g. ``{min_score_gap: 1.0}`` for UltraFeedback or ``{axis: safer}`` for PKU-SafeRLHF."""
    min_zh_ratio: float | None = None
    """Drop this source's records whose share of Chinese characters is below this (e.g. 0.3 for a Chinese
    source that holds some English rows); overrides the data module's ``min_zh_ratio``."""


@dataclass
class SourceReport:
    """What happened to one source's rows."""

    name: str
    path: str
    format: str
    counts: Counter = field(default_factory=Counter)
    """``rows_read``, ``records``, ``examples``, ``truncated``; reasons under ``skipped/``, ``error/``, ``dropped/``."""
    languages: Counter = field(default_factory=Counter)
    """Examples per language."""
    buckets: Counter = field(default_factory=Counter)
    """Examples per length bucket, keyed by the bucket's upper bound in tokens."""
    tokenized: int = 0
    """Records that reached tokenisation (after cleaning)."""
    truncated_lengths: list[int] = field(default_factory=list)
    """Untruncated token lengths of the records that were cut at ``max_length`` (kept or then dropped)."""

    @property
    def truncated_share(self) -> float:
        return len(self.truncated_lengths) / self.tokenized if self.tokenized else 0.0

    @property
    def longest_truncated(self) -> list[int]:
        """The three longest untruncated lengths among the truncated records, longest first."""
        return sorted(self.truncated_lengths, reverse=True)[:3]

    @property
    def drops(self) -> dict[str, int]:
        prefixes = ("skipped/", "error/", "dropped/")
        return {k: v for k, v in sorted(self.counts.items()) if k.startswith(prefixes)}


@dataclass
class PreparedData:
    examples: Sequence[dict]
    """Tokenised examples with their ``length`` (tokens), ``lang`` and ``source``: a list, or from the data cache an
    `ExampleTable` (`lit_align.data.table`) that reads them from Arrow."""
    records: Sequence[dict]
    """The cleaned internal records behind ``examples``, in the same order."""
    reports: list[SourceReport]
    record_digests: Sequence[str] | None = None
    """`record_hash` of every record, when known without hashing them again (stored in the data cache)."""

    def digests(self) -> set[str]:
        """`record_hash` of every record that became an example."""
        if self.record_digests is not None:
            return set(self.record_digests)
        return {record_hash(record) for record in self.records}


def effective_bounds(bucket_bounds: list[int] | tuple[int, ...], max_length: int) -> list[int]:
    """Bucket upper bounds below ``max_length``, then ``max_length`` itself: nothing is longer than that."""
    return sorted({b for b in bucket_bounds if b < max_length} | {max_length})


def bucket_of(length: int, bounds: list[int]) -> int:
    """Upper bound of the bucket holding ``length``: bucket ``i`` holds ``(bounds[i-1], bounds[i]]``."""
    return bounds[min(bisect.bisect_left(bounds, length), len(bounds) - 1)]


@dataclass(frozen=True)
class PrepareSettings:
    """How records become examples: built once (by the data module, from its arguments) and passed whole to every
    step of preparation."""

    task: str = "sft"
    """``sft``, ``preference`` or ``prompt``: which examples to make."""
    max_length: int = 1024
    """Longest sequence in tokens; longer ones are truncated and counted."""
    max_prompt_length: int | None = None
    """Tokens of the prompt a truncated preference pair keeps at least (default ``max_length // 2``)."""
    bucket_bounds: tuple[int, ...] = (256, 1024, 2048)
    """Upper bounds of the length buckets, made effective for ``max_length`` here (`effective_bounds`)."""
    on_error: str = "raise"
    """``raise`` at the first malformed record, or ``skip`` it and count it."""
    dedupe: bool = True
    """Drop exact duplicates across the sources of a split."""
    nfkc: bool = True
    """Unicode NFKC normalisation (Chinese full-width punctuation kept)."""
    min_zh_ratio: float | None = None
    """Drop records with a smaller share of Chinese characters (a source's own ``min_zh_ratio`` wins)."""
    guidance_text: str | None = None
    """Also tokenise every preference pair with this instruction in the system message."""
    drop_in_train: bool = False
    """Drop validation records that are also training records (they are counted either way)."""
    max_truncated_fraction: float = 0.2
    """Largest share of a source's examples that may be cut at ``max_length`` (prompts: dropped); more stops
    preparation."""
    system_prompt: str | None = None
    """Task ``prompt``: the system message of every prompt (a system message of the data follows it)."""
    prompt_template: str | None = None
    """Task ``prompt``: a ``str.format`` string with one ``{prompt}`` field that wraps the last user message."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_truncated_fraction <= 1.0:
            raise ValueError(f"max_truncated_fraction must be in [0, 1], got {self.max_truncated_fraction}")
        if self.task not in TASKS:
            raise ConfigError(f"data.task must be one of {', '.join(TASKS)}, got {self.task!r}")
        for key in ("system_prompt", "prompt_template"):
            if getattr(self, key) is not None and self.task != "prompt":
                raise ConfigError(
                    f"data.{key} shapes the prompts of task prompt (GRPO, expert iteration), but the task is "
                    f"{self.task!r}: remove data.{key}"
                )
        if self.prompt_template is not None:
            check_prompt_template(self.prompt_template)
        object.__setattr__(self, "bucket_bounds", tuple(effective_bounds(self.bucket_bounds, self.max_length)))


def prepare_sources(
    sources: list[DataSource],
    tokenizer,
    settings: PrepareSettings,
    *,
    max_rows: int | None = None,
    train_digests: set[str] | None = None,
    num_proc: int = 1,
) -> PreparedData:
    """Read, clean, de-duplicate (across all ``sources``) and tokenise; see the module docstring.

    With ``settings.guidance_text``, preference examples also carry the pair tokenised with that instruction in
    the system message (see `tokenize_record`). ``train_digests`` (the training split's ``PreparedData.digests()``)
    makes this a validation split: records that are also training records are counted as ``in_train``, and
    with ``settings.drop_in_train`` dropped (``dropped/in_train``). ``max_rows`` reads only the first rows of each
    source (dry runs). ``num_proc`` processes clean and tokenise, with the same result as one
    (`lit_align.data.parallel`)."""
    names = [source.name or _default_name(source) for source in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"data sources need distinct names (set `name:`), got {names}")
    seen: set[str] = set()
    examples, kept_records, reports = RowCollector(), RowCollector(), []
    kept_digests: list[str] = []
    for source, name in zip(sources, names, strict=True):
        # Task prompt reads auto sources as `prompt`, which keeps every column for the reward functions.
        format = "prompt" if settings.task == "prompt" and source.format == "auto" else source.format
        report = SourceReport(name, source.path, format)
        records, read_counts = read_source(
            source.path,
            format,
            name=name,
            split=source.split,
            on_error=settings.on_error,
            options=source.options,
            max_rows=max_rows,
            subset=source.subset,
        )
        for key, value in read_counts.items():
            report.counts[_read_key(key)] += value
        ratio = settings.min_zh_ratio if source.min_zh_ratio is None else source.min_zh_ratio
        chunks = prepared_chunks(records, tokenizer, settings, source=name, min_zh_ratio=ratio, num_proc=num_proc)
        walk = _SourceWalk(report, settings, seen, train_digests, kept_digests)
        for chunk in chunks:
            keep = walk.outcomes(chunk.outcomes)
            examples.add(chunk.examples, keep)
            kept_records.add(chunk.records, keep)
        del records
        walk.finish()
        report.counts["examples"] = sum(report.languages.values())
        check_truncation(report, settings)
        check_has_examples(report)
        reports.append(report)
    return PreparedData(examples.finish(), kept_records.finish(), reports, kept_digests)


def check_truncation(report: SourceReport, settings: PrepareSettings) -> None:
    """Raise when more than ``settings.max_truncated_fraction`` of the source's examples were truncated (a
    `ConfigError`: the CLI prints its message alone, since it names the settings to change)."""
    if report.truncated_share <= settings.max_truncated_fraction:
        return
    longest = report.longest_truncated
    lengths = ", ".join(str(n) for n in longest)
    which = f"the longest are {lengths} tokens" if len(longest) > 1 else f"the longest is {lengths} tokens"
    if settings.task == "prompt":
        raise ConfigError(
            f"data source '{report.name}' ({report.path}): {len(report.truncated_lengths)} of {report.tokenized} "
            f"prompts ({report.truncated_share:.1%}) are longer than max_length={settings.max_length} tokens and were "
            f"dropped (a prompt is never cut: a question cut short has no verifiable answer), more than "
            f"max_truncated_fraction={settings.max_truncated_fraction}; {which}. Raise data.max_length (to "
            f"{longest[0]} to keep them all), or data.max_truncated_fraction if dropping them is intended."
        )
    raise ConfigError(
        f"data source '{report.name}' ({report.path}): {len(report.truncated_lengths)} of {report.tokenized} "
        f"examples ({report.truncated_share:.1%}) are longer than max_length={settings.max_length} tokens and were "
        f"truncated, more than max_truncated_fraction={settings.max_truncated_fraction}; {which}. Raise "
        f"data.max_length (to {longest[0]} to keep them all whole), or data.max_truncated_fraction if cutting them "
        "is intended."
    )


def check_prompt_template(template: str) -> None:
    """A `ConfigError` naming ``data.prompt_template`` unless it is a ``str.format`` string whose only field is
    ``{prompt}`` (literal braces written ``{{`` and ``}}``)."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if names == {"prompt"}:
            template.format(prompt="")
    except (ValueError, KeyError, IndexError) as err:
        raise ConfigError(
            f"data.prompt_template {template!r} is not a valid format string ({err}); write literal braces as "
            "{{ and }}"
        ) from None
    if names != {"prompt"}:
        others = sorted(names - {"prompt"})
        what = f"has other fields {others}" if others else "has no {prompt} field"
        raise ConfigError(
            f"data.prompt_template {template!r} {what}: it takes one field, {{prompt}}, which the question fills, "
            "e.g. '{prompt}\\nGive the final answer after ####.'"
        )


def check_has_examples(report: SourceReport) -> None:
    """Raise when a source gave no examples, with the counts that say where its rows went."""
    if report.counts["examples"]:
        return
    where = ", ".join(f"{reason}: {n}" for reason, n in report.drops.items()) or "no reason counted"
    raise ConfigError(
        f"data source '{report.name}' ({report.path}) gave no examples: {report.counts['rows_read']} rows read, "
        f"{report.counts['records']} records ({where}). Fix the rows (on_error: raise stops at the first bad one "
        "with its file and line) or remove the source."
    )


class _SourceWalk:
    """One source's outcomes, walked in record order as the one-process pipeline would treat the records: conversion
    (task prompt), cleaning drops, de-duplication across the split (``seen``), the ``in_train`` check of a validation
    split, tokenisation. The counts go into ``report`` in that order of steps, and the error raised is the first
    one that pipeline meets: a conversion error anywhere in the source before a tokenising error, which counts only
    for a record that survived the steps before it. Its `outcomes` returns which examples to keep."""

    def __init__(self, report, settings, seen: set[str], train_digests: set[str] | None, kept_digests: list[str]):
        self.report, self.settings, self.seen, self.train_digests = report, settings, seen, train_digests
        self.kept_digests = kept_digests
        self.conversion, self.drops, self.checked, self.tokenized = Counter(), Counter(), Counter(), Counter()
        self.records = 0
        self.conversion_error: Exception | None = None
        self.tokenizing_error: Exception | None = None

    def outcomes(self, outcomes: list[Outcome]) -> list[bool]:
        """Which of the outcomes' examples (those with a ``length``) are kept, in order."""
        keep = []
        for outcome in outcomes:
            kept = self._outcome(outcome)
            if outcome.length is not None:  # the chunk's tables hold a row for each of these
                keep.append(kept)
        return keep

    def _outcome(self, outcome: Outcome) -> bool:
        if (error := outcome.conversion_error) is not None:
            if not isinstance(error, FieldError):
                self.conversion_error = self.conversion_error or error
            elif self.settings.on_error == "raise":
                located = DataFormatError(self.report.path, outcome.row, error.field, error.reason)
                self.conversion_error = self.conversion_error or located
            else:
                self.conversion[f"error/{error.field}"] += 1
            return False
        self.records += 1
        reason = outcome.drop
        if reason is None and self.settings.dedupe:
            reason = "duplicate" if outcome.digest in self.seen else None
            self.seen.add(outcome.digest)
        if reason is not None:
            self.drops[reason] += 1
            return False
        if self.train_digests is not None and outcome.digest in self.train_digests:
            self.checked["dropped/in_train" if self.settings.drop_in_train else "in_train"] += 1
            if self.settings.drop_in_train:
                return False
        if self.tokenizing_error is not None:
            return False
        self.report.tokenized += 1
        if outcome.error is not None:
            self.tokenizing_error = outcome.error
            return False
        self.tokenized.update(outcome.counts or {})
        self.report.truncated_lengths.extend(outcome.truncated_lengths or ())
        if outcome.length is None:
            return False
        self.report.languages[outcome.lang] += 1
        self.report.buckets[bucket_of(outcome.length, list(self.settings.bucket_bounds))] += 1
        self.kept_digests.append(outcome.digest)
        return True

    def finish(self) -> None:
        """Raise the first error, or put the counts into the report in the order of the steps."""
        if self.conversion_error is not None:
            raise self.conversion_error
        if self.tokenizing_error is not None:
            raise self.tokenizing_error
        counts = self.report.counts
        counts.update(self.conversion)
        counts["records"] = self.records
        counts.update({f"dropped/{reason}": n for reason, n in self.drops.items()})
        counts.update(self.checked)
        counts.update(self.tokenized)


def _read_key(key: str) -> str:
    if key == "rows_read":
        return key
    return f"error/{key.removeprefix('error:')}" if key.startswith("error:") else f"skipped/{key}"


def _default_name(source: DataSource) -> str:
    name = source_name(source.path)
    return name if source.split == "train" or "/" not in name else f"{name}:{source.split}"
