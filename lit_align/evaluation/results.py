"""lm-eval's result dictionary as files a person and a spreadsheet read: ``results.json`` (all of it, plus what was
evaluated), ``results.csv`` (one row per task, metric and filter) and ``samples_<task>.jsonl``.

lm-eval keys a score as ``"<metric>,<filter>"`` and its standard error as ``"<metric>_stderr,<filter>"`` inside
each task's entry; a flat table needs both split apart, and the number of examples (``n-samples``) beside them,
since a score on 20 examples is not a score on 2,000.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

CSV_COLUMNS = ("task", "metric", "filter", "value", "stderr", "n")
_NOT_METRICS = {"alias", "name", "sample_len", "sample_count", " "}


def result_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """``{task, metric, filter, value, stderr, n}`` for every score in ``results["results"]`` (groups included;
    ``stderr`` and ``n`` are ``None`` where lm-eval has none)."""
    counts = results.get("n-samples", {})
    rows = []
    for task, scores in results.get("results", {}).items():
        for key, value in scores.items():
            if "," not in key or key.split(",")[0] in _NOT_METRICS or "_stderr," in key:
                continue
            metric, filter_name = key.split(",", 1)
            stderr = scores.get(f"{metric}_stderr,{filter_name}")
            n = counts.get(task, {}).get("effective")
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "filter": filter_name,
                    "value": _number(value),
                    "stderr": _number(stderr),
                    "n": n,
                }
            )
    return rows


def scalar_metrics(results: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """``{"eval/<task>/<metric>": value}`` for logging, the filter appended (``/<filter>``) unless it is ``none``."""
    scalars = {}
    for row in result_rows(results):
        if row["value"] is None:
            continue
        name = f"{prefix}/{row['task']}/{row['metric']}"
        scalars[name if row["filter"] == "none" else f"{name}/{row['filter']}"] = row["value"]
    return scalars


def write_results(output_dir: Path, results: dict[str, Any], manifest: dict[str, Any]) -> list[Path]:
    """Write ``results.json`` (``{"lit_align": manifest, ...lm-eval's result without samples}``), ``results.csv``
    and, when samples were logged, ``samples_<task>.jsonl``; returns the paths written."""
    output_dir.mkdir(parents=True, exist_ok=True)
    samples = results.get("samples") or {}
    whole = {"lit_align": manifest, **{k: v for k, v in results.items() if k != "samples"}}
    written = [output_dir / "results.json", output_dir / "results.csv"]
    written[0].write_text(json.dumps(whole, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    with written[1].open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in result_rows(results))
    for task, task_samples in samples.items():
        path = output_dir / f"samples_{task}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(s, ensure_ascii=False, default=_jsonable) + "\n" for s in task_samples)
        written.append(path)
    return written


def results_table(results: dict[str, Any]) -> str:
    """A Markdown table of ``result_rows``: task, metric, filter, value ± stderr, n."""
    lines = ["| task | metric | filter | value | ± stderr | n |", "|---|---|---|---:|---:|---:|"]
    for row in result_rows(results):
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        stderr = "" if row["stderr"] is None else f"{row['stderr']:.4f}"
        n = "" if row["n"] is None else str(row["n"])
        lines.append(f"| {row['task']} | {row['metric']} | {row['filter']} | {value} | {stderr} | {n} |")
    return "\n".join(lines)


def _number(value: Any) -> float | None:
    """A score as a float; lm-eval writes ``"N/A"`` for a standard error it could not compute."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _jsonable(value: Any) -> Any:
    """What ``json`` cannot write (numpy numbers, dtypes, sets, callables in task configs) as plain values."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
