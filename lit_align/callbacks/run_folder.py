"""A run's folder: the ``<experiment>/latest`` link to the newest one, and the folder a resumed run continues in.

Each run of a recipe gets a new ``logs/<name>/version_N``; a README or a script that says ``version_0`` is wrong
from the second run on. At the start of every run (``setup``, on rank zero) this callback points
``logs/<name>/latest`` at the run's own ``version_N`` (a relative link, so the folder can be moved), replacing
the link a previous run made. A ``latest`` that is a real file or directory, or a link that points outside the
experiment's folder, was not made by a run: it is left alone, with a warning.

The CLI adds it to every run that has a logger; it needs no arguments.

A run resumed from a checkpoint of its own folder (``--ckpt_path logs/<name>/version_N/checkpoints/last.ckpt``,
also through ``latest``) logs into that folder again (``continue_run_folder``, called by the CLI): one run in
TensorBoard with one curve per metric, ``ModelCheckpoint`` keeps its top-k bookkeeping (it resets it, with a
warning, when the checkpoint directory changes), and ``hf/``, ``last.ckpt`` and ``latest`` all describe the same,
latest state. What a killed run logged after its checkpoint is hidden by TensorBoard's ``purge_step`` (set to the
checkpoint's step), so the resumed run's values replace it. A checkpoint from anywhere else, a logger ``version``
set in the recipe, or a logger other than TensorBoard's (Lightning's CSVLogger deletes the ``metrics.csv`` it finds
in an existing folder) start a new version folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

LINK_NAME = "latest"


def run_folders(logger) -> tuple[Path, str] | None:
    """``(experiment folder, run folder name)`` of a logger with versioned run folders (TensorBoard, CSV), or
    None (no logger, a logger without folders, or a run folder nested deeper, such as a ``sub_dir``)."""
    root_dir, log_dir = getattr(logger, "root_dir", None), getattr(logger, "log_dir", None)
    if not root_dir or not log_dir or Path(log_dir).parent != Path(root_dir):
        return None
    return Path(root_dir), Path(log_dir).name


def resumed_version(ckpt_path: str | Path, experiment: str | Path) -> str | None:
    """The run folder name (``version_N``) when ``ckpt_path`` lies in ``<experiment>/<run>/checkpoints/``, after
    following links (``latest``, a ``last.ckpt`` link); None otherwise (including Lightning's ``last``/``best``)."""
    checkpoint = Path(ckpt_path).resolve()
    run = checkpoint.parent.parent
    if checkpoint.parent.name != "checkpoints" or run.parent != Path(experiment).resolve():
        return None
    return run.name


def checkpoint_step(ckpt_path: str | Path) -> int | None:
    """The global step stored in a checkpoint file (or in ``meta.pt`` of an FSDP2 checkpoint directory); None when
    it cannot be read cheaply (a DeepSpeed directory). Memory-mapped: the weights are not read."""
    path = Path(ckpt_path)
    path = path / "meta.pt" if path.is_dir() else path
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 (unreadable here: Lightning reports it when it loads the checkpoint)
        return None


def continue_run_folder(logger_config, ckpt_path: str | Path) -> str | None:
    """Point a parsed ``trainer.logger`` (a TensorBoardLogger's ``class_path``/``init_args``) at the run folder that
    holds ``ckpt_path``: its ``version``, and ``purge_step`` at the checkpoint's step. Returns the folder name, or
    None when the run gets a new folder (see the module docstring for when)."""
    init = getattr(logger_config, "init_args", None)
    if init is None or not str(getattr(logger_config, "class_path", "")).endswith("TensorBoardLogger"):
        return None
    if init.get("version") is not None or init.get("save_dir") is None:
        return None
    version = resumed_version(ckpt_path, Path(init.save_dir) / (init.get("name") or ""))
    if version is None:
        return None
    init.version = version
    if init.get("purge_step") is None:
        # Lightning logs the first batch after a resume at the checkpoint's global step; anything at that step or
        # later in the folder's older event files came after the checkpoint (validations log one step earlier).
        init.purge_step = checkpoint_step(ckpt_path)
    return version


def point_latest_at(experiment: Path, run_name: str) -> str | None:
    """Make ``experiment/latest`` a relative link to ``run_name``; return why not, when it must not be touched.

    Replaces only a link whose target is a sibling folder name (what this function writes), atomically (a new
    link renamed over the old one), so a reader never finds ``latest`` missing."""
    link = experiment / LINK_NAME
    if link.is_symlink():
        target = os.readlink(link)
        if os.sep in target.rstrip(os.sep) or (os.altsep and os.altsep in target):
            return f"{link} is a link to {target}, which no run made"
        if target == run_name:
            return None
    elif link.exists():
        return f"{link} is a {'directory' if link.is_dir() else 'file'} that no run made"
    experiment.mkdir(parents=True, exist_ok=True)
    partial = experiment / f".{LINK_NAME}.{os.getpid()}"
    if partial.is_symlink():
        partial.unlink()
    try:
        os.symlink(run_name, partial, target_is_directory=True)
        os.replace(partial, link)
    except OSError as error:  # Windows without the privilege to make links
        return f"could not link {link} to {run_name}: {error}"
    return None


class LatestRunLink(Callback):
    """Points ``<experiment>/latest`` at this run's folder when the run starts (on rank zero)."""

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero or trainer.logger is None:
            return
        folders = run_folders(trainer.logger)
        if folders is None:
            return
        problem = point_latest_at(*folders)
        if problem:
            rank_zero_warn(f"{problem}: left as it is, so it does not point at this run ({folders[1]}).")
