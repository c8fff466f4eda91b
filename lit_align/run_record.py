"""``run.json``: what made a run, in its own folder, so every number in a paper table traces back to it.

A metric in a table is only worth what one can say about where it came from: which code (commit, and whether the
working tree had uncommitted changes), which library versions, which hardware and precision, which seed, which
exact configuration (the SHA-256 of the resolved ``config.yaml`` beside it) and which data (the digest of the
tokenised examples, so a changed chat template or ``max_length`` shows even when the files did not change). A
sweep also needs to know whether a run got to its end: a folder with checkpoints may belong to a run that crashed
or was killed half-way.

The record is written when the run starts (``"status": "running"``) and rewritten at its end (``finished``,
``failed`` with the error, ``interrupted``); a process killed outright leaves ``running``, which is the truth
as far as anyone can tell. Each write goes to a temporary file in the same folder and is renamed over the old
one, so a reader (a sweep polling its runs) never sees half a file. A run resumed into its own folder keeps the
earlier records under ``previous_attempts``.

Everything here is a plain function of its inputs (a trainer and a data module are only read); the callback
that calls them at the right moments is `lit_align.run_config.SaveRunConfig`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lit_align.data.digest import examples_digest

RECORD_NAME = "run.json"
GIT_TIMEOUT_S = 5.0
"""A git that hangs (a network file system, a huge repository) must not hold up the start of a run."""

_LIBRARIES = ("torch", "lightning", "transformers", "peft")


def now_iso() -> str:
    """The current time, ISO-8601 in UTC with microseconds (``2026-01-31T12:00:00.123456+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _git(path: Path, *args: str) -> str | None:
    """``git -C path <args>``'s output, or None when git is missing, slow or fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(path: str | Path) -> dict[str, Any]:
    """``{"git_commit", "git_dirty"}`` of the clone that tracks ``path``; both None outside one or without git.

    ``path`` must itself be tracked: a package installed into a virtual environment that happens to sit inside
    some other repository (a user's project with its ``.venv``) would otherwise report that project's commit.
    Dirty means uncommitted changes to tracked files; untracked files (logs, outputs) do not count."""
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    unknown = {"git_commit": None, "git_dirty": None}
    if not directory.is_dir() or _git(directory, "ls-files", "--error-unmatch", "--", str(path.resolve())) is None:
        return unknown
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return unknown
    changes = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def lit_align_state() -> dict[str, Any]:
    """``{"version", "git_commit", "git_dirty"}`` of the lit_align that is running (the clone it was imported
    from, when it is one)."""
    import lit_align

    version = getattr(lit_align, "__version__", None) or _distribution_version("lit_align")
    return {"version": version, **git_state(Path(lit_align.__file__).parent)}


def library_versions() -> dict[str, str | None]:
    """Python's version and those of the libraries that change the numbers (None for one not installed)."""
    return {"python": platform.python_version(), **{name: _distribution_version(name) for name in _LIBRARIES}}


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what `platform.processor` says, else None."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def device_summary(trainer) -> dict[str, Any]:
    """``{"accelerator", "name", "devices", "world_size", "precision"}`` of a Lightning trainer; ``accelerator``
    is the short name (``cpu``, ``cuda``, ``mps``), ``name`` the GPU's (of this process's device) or the CPU's."""
    accelerator = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    if accelerator == "cuda":
        import torch

        name = torch.cuda.get_device_name(trainer.strategy.root_device)
    else:
        name = cpu_name()
    return {
        "accelerator": accelerator,
        "name": name,
        "devices": trainer.num_devices,
        "world_size": trainer.world_size,
        "precision": str(trainer.precision),
    }


def config_sha256(text: str) -> str:
    """SHA-256 (hex) of a configuration's text, as saved (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_summary(datamodule) -> dict[str, dict[str, Any] | None]:
    """``{"train": {"examples", "sha256"}, "val": ...}`` from a data module's ``train_data`` / ``val_data``
    (`lit_align.data.digest.examples_digest` of their ``examples``); None for a split it does not have."""
    summary: dict[str, dict[str, Any] | None] = {}
    for split in ("train", "val"):
        examples = getattr(getattr(datamodule, f"{split}_data", None), "examples", None)
        summary[split] = None if examples is None else {"examples": len(examples), "sha256": examples_digest(examples)}
    return summary


def start_record(
    *,
    command: list[str],
    subcommand: str | None,
    config_sha256: str | None,
    seed: int | None,
    trainer,
    datamodule=None,
    started: str | None = None,
) -> dict[str, Any]:
    """The record of a run that has just started (``status`` running, no end yet)."""
    return {
        "status": "running",
        "started": started or now_iso(),
        "ended": None,
        "seconds": None,
        "command": list(command),
        "subcommand": subcommand,
        "config_sha256": config_sha256,
        "seed": seed,
        "lit_align": lit_align_state(),
        "versions": library_versions(),
        "device": device_summary(trainer),
        "data": data_summary(datamodule),
        "global_step": None,
        "previous_attempts": [],
    }


def finish_record(
    record: dict[str, Any], status: str, error: str | None = None, global_step: int | None = None
) -> dict[str, Any]:
    """A copy of ``record`` that ended now with ``status`` (``finished``, ``failed``, ``interrupted``); ``error``
    is added only when given."""
    ended = now_iso()
    seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(record["started"])).total_seconds()
    finished = {**record, "status": status, "ended": ended, "seconds": seconds, "global_step": global_step}
    finished.pop("error", None)
    if error is not None:
        finished["error"] = error
    return finished


def error_text(exception: BaseException) -> str:
    """``"<Type>: <message>"``, the form ``run.json`` keeps an error in."""
    return f"{type(exception).__name__}: {exception}"


def with_previous_attempts(record: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """``record`` carrying ``previous`` (the folder's earlier run.json) and the attempts it carried, oldest
    first."""
    if previous is None:
        return record
    earlier = list(previous.get("previous_attempts") or [])
    attempt = {key: value for key, value in previous.items() if key != "previous_attempts"}
    return {**record, "previous_attempts": [*earlier, attempt]}


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when there is none or it is not a JSON object."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON at ``path`` atomically: a temporary file in the same folder, renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(temporary, "w") as file:
            json.dump(record, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
