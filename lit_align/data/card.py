"""The data card: what each source contributed, what was dropped and why, and what one epoch will look like.

Written by ``scripts/prepare_data.py`` as ``DATA_CARD.md``; the data module logs the same counts at set-up
(`summary_line`, `overlap_warning`, `truncation_warning`, `count_metrics`).
The expected mix is counted from the sampler's actual plan for epoch 0, not estimated from the weights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from lit_align.data.prepare import SourceReport, bucket_of
from lit_align.data.table import column


def summary_line(split: str, report: SourceReport) -> str:
    """One log line: a source's counts and languages."""
    counts = ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items()))
    languages = ", ".join(f"{k}={v}" for k, v in sorted(report.languages.items()))
    return f"data[{split}/{report.name}]: {counts}; languages: {languages}"


def overlap_warning(report: SourceReport) -> str | None:
    """What to tell the user when validation records of this source are also training records."""
    if not report.counts["in_train"]:
        return None
    return (
        f"{report.counts['in_train']} validation records of {report.name} are also training records: their "
        "validation metrics measure memorisation. data.val_in_train: drop leaves them out."
    )


def truncation_warning(split: str, report: SourceReport, max_length: int) -> str | None:
    """What to tell the user when some of a source's examples were cut at ``max_length``, or (task prompt) dropped
    as longer (too many is an error, raised while preparing: `prepare.check_truncation`)."""
    cut = len(report.truncated_lengths)
    if not cut:
        return None
    if report.counts["dropped/prompt_too_long"]:
        return (
            f"data[{split}/{report.name}]: {cut} of {report.tokenized} prompts ({report.truncated_share:.1%}) were "
            f"longer than max_length={max_length} tokens and dropped (the longest had {report.longest_truncated[0]}); "
            "raise data.max_length to keep them"
        )
    return (
        f"data[{split}/{report.name}]: {cut} of {report.tokenized} examples ({report.truncated_share:.1%}) were "
        f"truncated to max_length={max_length} tokens (the longest had {report.longest_truncated[0]}); raise "
        "data.max_length to keep them whole"
    )


def count_metrics(split: str, reports: Sequence[SourceReport]) -> dict[str, float]:
    """Every count as a logger metric: ``data/<split>/<source>/<count>``."""
    return {
        f"data/{split}/{report.name}/{key.replace('/', '_')}": float(value)
        for report in reports
        for key, value in report.counts.items()
    }


def expected_mix(plan: Sequence[Sequence[int]], examples: Sequence[dict], bounds: list[int]) -> dict:
    """Counts by source, language and bucket over a plan of batches, and its padding fraction in tokens."""
    by_source, by_lang, by_bucket = Counter(), Counter(), Counter()
    lengths, sources, langs = (column(examples, key) for key in ("length", "source", "lang"))
    real = padded = 0
    for batch in plan:
        sizes = [int(lengths[i]) for i in batch]
        real += sum(sizes)
        padded += max(sizes) * len(sizes)
        for i, size in zip(batch, sizes, strict=True):
            by_source[sources[i]] += 1
            by_lang[langs[i]] += 1
            by_bucket[bucket_of(size, bounds)] += 1
    return {
        "batches": len(plan),
        "examples": sum(by_source.values()),
        "source": by_source,
        "lang": by_lang,
        "bucket": by_bucket,
        "padding_fraction": 1 - real / padded if padded else 0.0,
    }


def _share(counter: Counter, key) -> str:
    total = sum(counter.values())
    return f"{counter[key]} ({counter[key] / total:.1%})" if total else "0"


def _source_tables(reports: list[SourceReport], bounds: list[int]) -> list[str]:
    langs = sorted({lang for r in reports for lang in r.languages})
    lines = [
        "| source | path | format | rows read | records | examples | truncated | "
        + " | ".join(f"lang {lang}" for lang in langs)
        + " |",
        "|---|---|---|---:|---:|---:|---:|" + "---:|" * len(langs),
    ]
    for r in reports:
        cells = [r.name, f"`{r.path}`", r.format, r.counts["rows_read"], r.counts["records"], r.counts["examples"]]
        cells += [r.counts["truncated"]] + [_share(r.languages, lang) for lang in langs]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Rows and records not used, by reason (`skipped/` by the reader, `error/` malformed and skipped, "]
    lines += ["`dropped/` by cleaning; `dropped/duplicate` counts duplicates removed):", ""]
    drops = [(r.name, reason, n) for r in reports for reason, n in r.drops.items()]
    if drops:
        lines += ["| source | reason | count |", "|---|---|---:|"]
        lines += [f"| {name} | {reason} | {n} |" for name, reason, n in drops]
    else:
        lines.append("None.")
    overlap = [(r.name, r.counts["in_train"]) for r in reports if r.counts["in_train"]]
    if overlap:
        lines += ["", "Validation records that are also training records, kept (`val_in_train: drop` drops them):"]
        lines += [""] + [f"- {name}: {n}" for name, n in overlap]
    lines += ["", "Examples per length bucket (tokens, with the run's tokenizer):", ""]
    lines.append("| source | " + " | ".join(f"≤{b}" for b in bounds) + " |")
    lines.append("|---|" + "---:|" * len(bounds))
    for r in reports:
        lines.append(f"| {r.name} | " + " | ".join(str(r.buckets[b]) for b in bounds) + " |")
    return lines


def _one_line(value) -> str:
    """A setting as one line: a prompt template's line breaks, written out, would break the Markdown list."""
    return str(value).replace("\n", "\\n")


def render_data_card(
    splits: dict[str, list[SourceReport]], bounds: list[int], settings: dict, mix: dict | None = None
) -> str:
    """Markdown for ``DATA_CARD.md``: one section per split, then the expected training mix."""
    lines = ["# Data card", ""]
    lines += [f"- {key}: `{_one_line(value)}`" for key, value in settings.items()]
    for split, reports in splits.items():
        lines += ["", f"## {split}", ""]
        lines += _source_tables(reports, bounds) if reports else ["No sources."]
    if mix is not None:
        lines += ["", "## Expected training mix (epoch 0 of the sampler's plan)", ""]
        lines.append(
            f"{mix['batches']} batches, {mix['examples']} examples on all ranks together; padding is "
            f"{mix['padding_fraction']:.1%} of the tokens in a batch."
        )
        for title, key in (("source", "source"), ("language", "lang"), ("length bucket (tokens)", "bucket")):
            lines += ["", f"| {title} | examples |", "|---|---:|"]
            label = (lambda k: f"≤{k}") if key == "bucket" else str
            lines += [f"| {label(k)} | {_share(mix[key], k)} |" for k in sorted(mix[key])]
    return "\n".join(lines) + "\n"
