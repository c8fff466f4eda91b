"""Where the scripts write: under ``logs/`` unless told otherwise, and never over what an earlier call left.

A script that writes into the working directory (``plots/``, ``merged/``) litters a clone and silently replaces
the last call's results. Each script takes one ``--output``; without it the script picks the next free numbered
folder under its default root (``logs/plots/0``, ``logs/plots/1``, ...), as Lightning numbers run versions.
An ``--output`` that already holds files is refused unless ``--overwrite`` is given.
"""

from __future__ import annotations

from pathlib import Path


def next_free(root: Path) -> Path:
    """``root/N`` for the smallest N not taken yet."""
    taken = {int(p.name) for p in root.glob("*") if p.name.isdigit()} if root.is_dir() else set()
    return root / str(min(set(range(len(taken) + 1)) - taken))


def output_directory(output: Path | None, default_root: Path, overwrite: bool = False) -> Path:
    """The directory to write into, created: ``output``, or the next free folder under ``default_root``."""
    directory = next_free(default_root) if output is None else output
    if directory.is_file() or (directory.is_dir() and any(directory.iterdir()) and not overwrite):
        raise SystemExit(
            f"{directory} already exists and is not an empty directory: choose another --output, or pass "
            "--overwrite to replace what is there"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def output_file(output: Path, overwrite: bool = False) -> Path:
    """``output``, refused if it exists (unless ``overwrite``), with its parent created."""
    if output.exists() and not overwrite:
        raise SystemExit(f"{output} already exists: choose another --output, or pass --overwrite to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    return output
