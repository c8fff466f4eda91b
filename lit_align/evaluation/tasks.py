"""Which lm-eval tasks an evaluation names, where their YAML files are, and which local files they read.

lm-eval finds tasks by indexing YAML files: its own ~15,000 take about 10 s to index on 2 CPU cores, the
project's few under ``configs/eval/tasks/`` take milliseconds. When every task named is a local one, only the
local folder is indexed (the callback evaluates often, and the quickstart should not wait on tasks it never runs).

A local task reads a JSON Lines file named in its YAML (``dataset_kwargs.data_files``, relative to the working
directory, like every path in a recipe); ``data_files`` replaces it per task, so the same task runs on another
file without editing the YAML. A missing file stops here, naming the task, the setting and the file, rather
than inside ``datasets``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_TASKS = Path(__file__).resolve().parents[2] / "configs" / "eval" / "tasks"
"""The project's own task YAMLs (a clone or an editable install)."""


def default_include_path() -> str | None:
    return str(PROJECT_TASKS) if PROJECT_TASKS.is_dir() else None


def local_task_files(include_path: str | None) -> dict[str, Path]:
    """``task name -> YAML file`` for the tasks defined under ``include_path`` (files with a ``task:`` key)."""
    if not include_path:
        return {}
    found = {}
    for path in sorted(Path(include_path).rglob("*.yaml")):
        try:
            config = yaml.load(path.read_text(encoding="utf-8"), Loader=_IgnoreTags)
        except yaml.YAMLError:
            continue
        if isinstance(config, dict) and isinstance(config.get("task"), str):
            found[config["task"]] = path
    return found


def task_manager(tasks: list[str], include_path: str | None):
    """An lm-eval ``TaskManager`` that knows ``tasks``: the local folder alone when it defines all of them."""
    if include_path and not Path(include_path).is_dir():
        raise FileNotFoundError(f"include_path: no such directory: {include_path}")
    local_only = set(tasks) <= set(local_task_files(include_path))
    manager = _indexed(include_path, include_defaults=not local_only)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        where = f"lm-eval's tasks or {include_path}" if include_path else "lm-eval's tasks"
        raise ValueError(
            f"tasks: {', '.join(unknown)} not found in {where}. List lm-eval's with `lm-eval ls tasks`; a task "
            "of your own is a YAML file in include_path"
        )
    return manager


@lru_cache(maxsize=4)
def _indexed(include_path: str | None, include_defaults: bool):
    """One index per folder for the life of the process: the LMEval callback evaluates many times, and lm-eval
    builds fresh task objects from the same index on every ``load``."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def task_specs(tasks: list[str], data_files: dict[str, str], include_path: str | None) -> list[str | dict[str, Any]]:
    """What ``simple_evaluate(tasks=...)`` is given: a task's name, or, for a task whose data file is replaced,
    ``{"task": name, "dataset_kwargs": {"data_files": ...}}`` (lm-eval lays it over the task's YAML). Every local
    file a local task will read is checked to exist first."""
    extra = sorted(set(data_files) - set(tasks))
    if extra:
        raise ValueError(f"data_files names {', '.join(extra)}, which is not among tasks {tasks}")
    local = local_task_files(include_path)
    specs: list[str | dict[str, Any]] = []
    for task in tasks:
        files, test_split = _yaml_data_files(local[task]) if task in local else ({}, "test")
        if task in data_files:  # the evaluated split is replaced; a few-shot split from the YAML stays
            if task not in local:
                raise ValueError(
                    f"data_files.{task}: only a task defined in include_path ({include_path}) reads a "
                    "local file; copy its YAML there"
                )
            files = {**files, test_split: str(Path(data_files[task]))}
            specs.append(_with_data_files(local[task], files))
        else:
            specs.append(task)
        for split, path in files.items():
            if not Path(path).is_file():
                replaced = task in data_files and split == test_split
                source = f"data_files.{task}" if replaced else f"dataset_kwargs.data_files in {local[task]}"
                raise FileNotFoundError(
                    f"task {task} reads {path} ({source}): no such file (relative paths start at {Path.cwd()}). "
                    f"Point it at your copy: --data_files '{{{task}: path/to/file.jsonl}}'"
                )
    return specs


def _with_data_files(path: Path, files: dict[str, str]) -> dict[str, Any]:
    """The task's whole config (as lm-eval reads it: ``!function`` resolved, ``include`` merged) with other data
    files. A dict naming only ``task`` and the new keys would be a new task, not the YAML's with changes."""
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(path, resolve_func=True)
    config["dataset_kwargs"] = {**(config.get("dataset_kwargs") or {}), "data_files": files}
    return config


def _yaml_data_files(path: Path) -> tuple[dict[str, str], str]:
    """A local task's ``{split: file}`` (empty unless it reads JSON files) and the split it evaluates."""
    config = yaml.load(path.read_text(encoding="utf-8"), Loader=_IgnoreTags)
    test_split = config.get("test_split") or "test"
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if config.get("dataset_path") != "json" or not files:
        return {}, test_split
    return ({test_split: files} if isinstance(files, str) else dict(files)), test_split


class _IgnoreTags(yaml.SafeLoader):
    """lm-eval's YAMLs use ``!function module.name``; reading a task's name needs none of them."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)
