"""From sources to tokenised examples, with a count for every record that does not make it.

This is the whole preparation pipeline, shared by the data module (at set-up) and ``scripts/prepare_data.py``
(which writes the records and the data card): read each source in its format, normalise, filter and
de-duplicate across sources, tokenise with the run's tokenizer and chat template, and measure every example's
real token length for the length buckets. Each source gets a `SourceReport`, so the data card can say where
every row went.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lit_align.constants import IGNORE_INDEX
from lit_align.data.clean import clean_records, record_hash
from lit_align.data.read import read_source, source_name
from lit_align.data.tokenize import Tokenized, tokenize_conversation, tokenize_preference, tokenize_sft


@dataclass
class DataSource:
    """One dataset in a recipe's ``data.train`` or ``data.val`` list."""

    path: str
    """A local file (.jsonl, .json, .parquet, .csv) or directory, or a hub dataset name for ``load_dataset``."""
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

    @property
    def drops(self) -> dict[str, int]:
        prefixes = ("skipped/", "error/", "dropped/")
        return {k: v for k, v in sorted(self.counts.items()) if k.startswith(prefixes)}


@dataclass
class PreparedData:
    examples: list[dict]
    """Tokenised examples with their ``length`` (tokens), ``lang`` and ``source``."""
    records: list[dict]
    """The cleaned internal records behind ``examples``, in the same order."""
    reports: list[SourceReport]

    def digests(self) -> set[str]:
        """`record_hash` of every record that became an example."""
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
    """``sft`` or ``preference``: which examples to make."""
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "bucket_bounds", tuple(effective_bounds(self.bucket_bounds, self.max_length)))


def prepare_sources(
    sources: list[DataSource],
    tokenizer,
    settings: PrepareSettings,
    *,
    max_rows: int | None = None,
    train_digests: set[str] | None = None,
) -> PreparedData:
    """Read, clean, de-duplicate (across all ``sources``) and tokenise; see the module docstring.

    With ``settings.guidance_text``, preference examples also carry the pair tokenised with that instruction in
    the system message (see `tokenize_record`). ``train_digests`` (the training split's ``PreparedData.digests()``)
    makes this a validation split: records that are also training records are counted as ``in_train``, and
    with ``settings.drop_in_train`` dropped (``dropped/in_train``). ``max_rows`` reads only the first rows of each
    source (dry runs)."""
    names = [source.name or _default_name(source) for source in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"data sources need distinct names (set `name:`), got {names}")
    seen: set[str] = set()
    examples, kept_records, reports = [], [], []
    for source, name in zip(sources, names, strict=True):
        report = SourceReport(name, source.path, source.format)
        records, read_counts = read_source(
            source.path,
            source.format,
            name=name,
            split=source.split,
            on_error=settings.on_error,
            options=source.options,
            max_rows=max_rows,
            subset=source.subset,
        )
        for key, value in read_counts.items():
            report.counts[_read_key(key)] += value
        report.counts["records"] = len(records)
        ratio = settings.min_zh_ratio if source.min_zh_ratio is None else source.min_zh_ratio
        records, drops = clean_records(
            records, dedupe=settings.dedupe, min_zh_ratio=ratio, nfkc=settings.nfkc, seen=seen
        )
        report.counts.update({f"dropped/{reason}": n for reason, n in drops.items()})
        if train_digests is not None:
            records = _check_against_train(records, train_digests, settings.drop_in_train, report.counts)
        for record in records:
            example = tokenize_record(record, tokenizer, settings, report.counts)
            if example is None:
                continue
            example.update(lang=record["lang"], source=name)
            report.languages[record["lang"]] += 1
            report.buckets[bucket_of(example["length"], list(settings.bucket_bounds))] += 1
            examples.append(example)
            kept_records.append(record)
        report.counts["examples"] = sum(report.languages.values())
        reports.append(report)
    return PreparedData(examples, kept_records, reports)


def _check_against_train(records: list[dict], train_digests: set[str], drop: bool, counts: Counter) -> list[dict]:
    """Count (and with ``drop`` remove) the records whose `record_hash` is in ``train_digests``: validation
    examples the model trained on measure memorisation, not generalisation."""
    in_train = [record_hash(record) in train_digests for record in records]
    if not any(in_train):
        return records
    if not drop:
        counts["in_train"] += sum(in_train)
        return records
    counts["dropped/in_train"] += sum(in_train)
    return [record for record, seen in zip(records, in_train, strict=True) if not seen]


def tokenize_record(record: dict, tokenizer, settings: PrepareSettings, counts: Counter) -> dict | None:
    """Token ids and labels of one record for ``settings.task`` (``sft`` or ``preference``), or None (counted).

    With ``settings.guidance_text`` (preference only), the example also holds
    ``guided_{chosen,rejected}_{input_ids,labels}``: the same pair with the instruction in the system message
    (`guided_prompt`). Both versions must score the same completion tokens, since preference-guided DPO compares
    their log-probs. Truncation can break that, or cut the instruction itself (a long prompt loses tokens from its
    start, where the instruction is): such a pair is dropped as ``dropped/guided_completion_truncated`` or
    ``dropped/guided_instruction_truncated``.
    """
    max_length, max_prompt_length = settings.max_length, settings.max_prompt_length
    if settings.task == "preference":
        if "chosen" not in record:
            raise ValueError(
                f"source {record.get('source')!r} row {record.get('row')} is chat (SFT) data, but this module "
                "trains on preference pairs: give sources with prompt/chosen/rejected"
            )
        chosen, rejected = tokenize_preference(
            tokenizer, record["prompt"], record["chosen"], record["rejected"], max_length, max_prompt_length
        )
        if chosen.n_label_tokens == 0 or rejected.n_label_tokens == 0:
            counts["dropped/no_completion_tokens_after_truncation"] += 1
            return None
        example = {
            "chosen_input_ids": chosen.input_ids,
            "chosen_labels": chosen.labels,
            "rejected_input_ids": rejected.input_ids,
            "rejected_labels": rejected.labels,
            "length": max(len(chosen.input_ids), len(rejected.input_ids)),
        }
        if settings.guidance_text is not None:
            guided = _guided_pair(record, (chosen, rejected), tokenizer, settings)
            if isinstance(guided, str):
                counts[f"dropped/{guided}"] += 1
                return None
            example.update(guided, length=max(example["length"], *(len(ids) for ids in guided.values())))
        counts["truncated"] += chosen.truncated or rejected.truncated
        return example
    # Preference records feed SFT as prompt + chosen: the usual "SFT on the preferred answers" step.
    messages = record["messages"] if "messages" in record else record["prompt"] + record["chosen"]
    example = tokenize_sft(tokenizer, messages, max_length)
    if example.n_label_tokens == 0:
        counts["dropped/no_assistant_tokens_after_truncation"] += 1
        return None
    counts["truncated"] += example.truncated
    return {"input_ids": example.input_ids, "labels": example.labels, "length": len(example.input_ids)}


def guided_prompt(prompt: list[dict], guidance_text: str) -> list[dict]:
    """``prompt`` with ``guidance_text`` as its system message.

    When the prompt already starts with a system message, the instruction goes first in it, then a blank line,
    then the original system text: one system turn, as every chat template expects, and the task's own system
    text stays closest to the conversation.
    """
    if prompt and prompt[0]["role"] == "system":
        system = {**prompt[0], "content": f"{guidance_text}\n\n{prompt[0]['content']}"}
        return [system, *prompt[1:]]
    return [{"role": "system", "content": guidance_text}, *prompt]


def _guided_pair(
    record: dict,
    plain: tuple[Tokenized, Tokenized],
    tokenizer,
    settings: PrepareSettings,
) -> dict | str:
    """The ``guided_*`` keys of an example, or the reason the pair is dropped."""
    prompt = guided_prompt(record["prompt"], settings.guidance_text)
    sides = tokenize_preference(
        tokenizer, prompt, record["chosen"], record["rejected"], settings.max_length, settings.max_prompt_length
    )
    out = {}
    for name, side, plain_side in zip(("chosen", "rejected"), sides, plain, strict=True):
        if _completion(side) != _completion(plain_side):
            return "guided_completion_truncated"
        # Rare (truncated sides only): tokenise again uncut to see whether the prompt lost its start.
        if side.truncated:
            whole = tokenize_conversation(tokenizer, prompt + record[name], first_labelled=len(prompt))
            if _prompt_length(side) < _prompt_length(whole):
                return "guided_instruction_truncated"
        out[f"guided_{name}_input_ids"], out[f"guided_{name}_labels"] = side.input_ids, side.labels
    return out


def _completion(seq: Tokenized) -> list[int]:
    return [label for label in seq.labels if label != IGNORE_INDEX]


def _prompt_length(seq: Tokenized) -> int:
    return next((i for i, label in enumerate(seq.labels) if label != IGNORE_INDEX), len(seq.labels))


def _read_key(key: str) -> str:
    if key == "rows_read":
        return key
    return f"error/{key.removeprefix('error:')}" if key.startswith("error:") else f"skipped/{key}"


def _default_name(source: DataSource) -> str:
    name = source_name(source.path)
    return name if source.split == "train" or "/" not in name else f"{name}:{source.split}"
