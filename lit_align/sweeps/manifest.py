"""``<output>/sweep.json``: what a sweep folder holds, so that a later call can add to it and no call can spoil it.

A sweep is called again to add seeds or grid values, or to finish runs a crash left. The tables then mix runs of
several calls, which is only right if every run had the same base recipes and fixed ``--set`` values: a call
with other ones is refused with what differs, before anything runs. The grid and seeds may grow; the record
keeps every call's command line.
"""

from __future__ import annotations

import json
from pathlib import Path

from lit_align.sweeps.grid import SweepError

MANIFEST = "sweep.json"


def read_manifest(output: Path) -> dict | None:
    """The folder's sweep.json, or None when there is none yet; an unreadable one stops the sweep."""
    path = output / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise SweepError(f"{path} is not valid JSON ({error}): fix or remove it, or choose another --output") from None
    if not isinstance(manifest, dict):
        raise SweepError(f"{path} is not a sweep record (a JSON object): choose another --output")
    return manifest


def check_manifest(output: Path, configs: list[str], sets: list[tuple[str, str]]) -> None:
    """Refuse a call whose base recipes or ``--set`` values differ from those the folder's runs were made with."""
    manifest = read_manifest(output)
    if manifest is None:
        return
    problems = []
    if manifest.get("configs", []) != configs:
        problems.append(f"base configs {manifest.get('configs', [])} then, {configs} now")
    old_sets = {key: value for key, value in manifest.get("sets", [])}
    if old_sets != dict(sets):
        changed = sorted(set(old_sets.items()) ^ set(dict(sets).items()))
        problems.append("--set differs: " + ", ".join(f"{key}={value}" for key, value in changed))
    if problems:
        raise SweepError(
            f"{output / MANIFEST} was written by a sweep with other settings ({'; '.join(problems)}); its runs would "
            "mix with these in one table. Repeat its settings, or choose another --output (or --name)."
        )


def write_manifest(
    output: Path,
    command: list[str],
    configs: list[str],
    sets: list[tuple[str, str]],
    axes: dict[str, list[str]],
    seeds: list[int],
    metrics: list[str],
) -> Path:
    """Write sweep.json: this call's settings, the union of every call's axes and seeds, and all command lines."""
    old = read_manifest(output) or {}
    merged_axes = {key: list(values) for key, values in old.get("axes", {}).items()}
    for key, values in axes.items():
        merged_axes[key] = [*merged_axes.get(key, []), *(v for v in values if v not in merged_axes.get(key, []))]
    record = {
        "command": command,
        "configs": configs,
        "sets": [[key, value] for key, value in sets],
        "axes": merged_axes,
        "seeds": sorted(set(old.get("seeds", [])) | set(seeds)),
        "metrics": metrics,
        "commands": [*old.get("commands", []), command],
    }
    output.mkdir(parents=True, exist_ok=True)
    path = output / MANIFEST
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path
