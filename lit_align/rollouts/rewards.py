"""Calling a recipe's reward functions on a batch of completions, and saying exactly which one failed on what.

A recipe names its reward functions by import path (``reward_funcs:``), so YAML can hold them; this module
imports them once, when the module is built, and refuses a path that does not resolve before any model loads.
At each step every function is called once for the whole batch in TRL's convention (described in
`lit_align.rewards.reward_funcs`), and the scores become one ``[N, F]`` tensor: ``NaN`` where a function
returned ``None`` (does not apply), a weighted ``nansum`` over functions as the reward.

A user's function that raises deep inside a long run is the common failure, and a traceback that names neither
the record nor the text is of little help. So a failing batch is replayed one completion at a time to find the
first completion that fails, and the error names the function, the record's source (``file.jsonl:12``) and the
completion text. A function that returns the wrong number of values, or a value that is not a finite number or
``None``, is refused the same way, before a ``NaN`` can reach the loss.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import NoReturn

import torch

from lit_align.checks import ConfigError
from lit_align.rewards import reward_funcs

# Dataset columns that never become keyword lists: the prompt and completion arrive as ``prompts`` and
# ``completions`` (TRL drops the same columns).
_NOT_COLUMNS = frozenset({"prompt", "prompts", "completion", "completions"})
_SHOWN_CHARS = 300


class RewardError(RuntimeError):
    """A reward function failed or returned something that is not a reward, on a completion it names."""


@dataclass
class RewardScores:
    """The rewards of N completions under F functions."""

    per_func: torch.Tensor
    """``[N, F]`` float32, one column per function, ``NaN`` where the function returned ``None``."""
    total: torch.Tensor
    """``[N]``: ``nansum`` over functions of ``per_func * weights``; ``NaN`` where every function gave ``None``."""
    names: list[str]
    """The functions' names, in column order (metric names use them)."""

    @property
    def unscorable(self) -> int:
        """Completions that no function scored (every one returned ``None``)."""
        return int(torch.isnan(self.per_func).all(dim=1).sum()) if self.per_func.shape[1] else 0


def weighted_total(per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_f w_f * r_f`` over the functions that scored each completion (``NaN`` entries skipped, as TRL
    does); ``NaN`` where none did, so a caller can tell "no reward" from a reward of 0."""
    total = torch.nansum(per_func * weights, dim=1)
    return total.masked_fill(torch.isnan(per_func).all(dim=1), math.nan)


class RewardFunctions:
    """The reward functions of a recipe, imported from their paths, with one weight each."""

    def __init__(
        self,
        paths: list[str],
        weights: list[float] | None = None,
        setting: str = "model.init_args.reward_funcs",
        weights_setting: str = "model.init_args.reward_weights",
    ) -> None:
        """``paths``: import paths ``package.module.function`` (or ``package.module:function``). ``weights``: one
        per function, 1.0 each by default. ``setting`` / ``weights_setting``: the YAML keys errors name."""
        if isinstance(paths, str) or not paths:
            raise ConfigError(
                f"{setting} must list at least one reward function by import path, e.g. "
                f"[lit_align.rewards.reward_funcs.answer_reward], got {paths!r}"
            )
        self.paths = list(paths)
        self.functions: list[Callable] = [_import_function(path, f"{setting}[{i}]") for i, path in enumerate(paths)]
        self.names = _unique_names(self.functions, self.paths)
        self.weights = _check_weights(weights, len(self.paths), setting, weights_setting)

    def score(
        self,
        prompts: list[list[dict]],
        completions: list[str],
        fields: list[dict],
        sources: list[str],
        **extra,
    ) -> RewardScores:
        """Score N completions. ``prompts``, ``fields`` (the record's other columns) and ``sources``
        (``file.jsonl:line``, for errors) are per completion: the caller repeats a record's once per generation.
        ``extra`` keywords reach every function as they are (they win over a column of the same name)."""
        count = len(completions)
        for name, values in (("prompts", prompts), ("fields", fields), ("sources", sources)):
            if len(values) != count:
                raise ValueError(f"RewardFunctions.score: {len(values)} {name} for {count} completions")
        arguments = {**_columns(fields), **extra}
        columns = [self._call(i, arguments, prompts, completions, sources) for i in range(len(self.functions))]
        per_func = torch.tensor(columns, dtype=torch.float32).T.reshape(count, len(self.functions))
        total = weighted_total(per_func, torch.tensor(self.weights, dtype=torch.float32))
        return RewardScores(per_func=per_func, total=total, names=list(self.names))

    def _call(self, index: int, arguments: dict, prompts, completions, sources) -> list[float]:
        """Function ``index`` on the whole batch: its values as floats, ``NaN`` for ``None``."""
        function, label = self.functions[index], self._label(index)
        if not completions:
            return []
        _check_signature(function, label, arguments)
        try:
            values = function(prompts=prompts, completions=completions, **arguments)
        except Exception as error:
            _raise_first_failure(function, label, arguments, prompts, completions, sources, error)
        values = _as_list(values, label)
        if len(values) != len(completions):
            raise RewardError(
                f"reward function {label} returned {len(values)} values for {len(completions)} completions; it "
                f"must return one value (a number, or None where it does not apply) per completion"
            )
        return [_as_reward(value, label, i, sources[i]) for i, value in enumerate(values)]

    def _label(self, index: int) -> str:
        return f"{self.names[index]} ({self.paths[index]})"


def _raise_first_failure(function, label, arguments, prompts, completions, sources, error) -> NoReturn:
    """Replay the batch one completion at a time; raise `RewardError` naming the first that fails."""
    count = len(completions)
    for i in range(count):
        single = {key: _item(value, i, count) for key, value in arguments.items()}
        try:
            function(prompts=[prompts[i]], completions=[completions[i]], **single)
        except Exception as single_error:
            raise RewardError(
                f"reward function {label} raised on completion {i} (record {sources[i]}): "
                f"{type(single_error).__name__}: {single_error}\ncompletion: {_shorten(completions[i])!r}"
            ) from single_error
    raise RewardError(
        f"reward function {label} raised on the batch of {count} completions (sources {sources[0]} ... "
        f"{sources[-1]}), though on none of them alone: {type(error).__name__}: {error}"
    ) from error


def _import_function(path: str, key: str) -> Callable:
    """The callable at ``path`` (``a.b.c`` or ``a.b:c``); `ConfigError` naming ``key`` and the reason otherwise."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{key} must be an import path such as lit_align.rewards.reward_funcs.answer_reward")
    path = path.strip()
    if ":" in path:
        module_name, _, attribute = path.partition(":")
    else:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        hint = ""
        if callable(getattr(reward_funcs, path, None)):
            hint = f"; did you mean lit_align.rewards.reward_funcs.{path}?"
        raise ConfigError(f"{key}: {path!r} is not an import path (package.module.function){hint}")
    try:
        target = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"{key}: cannot import {path!r}: no module named {error.name!r}{_search_path_hint(error.name)}"
        ) from error
    except Exception as error:
        raise ConfigError(
            f"{key}: cannot import {path!r}: importing {module_name} raised {type(error).__name__}: {error}"
        ) from error
    try:
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError as error:
        raise ConfigError(f"{key}: cannot import {path!r}: {module_name} has no attribute {attribute!r}") from error
    if not callable(target):
        raise ConfigError(f"{key}: {path!r} is an object of type {type(target).__name__}, not a function")
    return target


def _search_path_hint(missing: str | None) -> str:
    """The usual cause of a user's module not importing: it sits in the current directory, which the
    ``lit_align`` command (unlike ``python -m lit_align``) does not search."""
    top = (missing or "").split(".")[0]
    local = bool(top) and (Path(top + ".py").is_file() or Path(top, "__init__.py").is_file())
    if local and "" not in sys.path and str(Path.cwd()) not in sys.path:
        return f" ({top} is in the current directory, which is not on the import path: run with PYTHONPATH=.)"
    return ""


def _unique_names(functions: list[Callable], paths: list[str]) -> list[str]:
    """Each function's ``__name__`` (its path's last part when it has none); a repeat gets ``_2``, ``_3``..."""
    names: list[str] = []
    for function, path in zip(functions, paths, strict=True):
        base = getattr(function, "__name__", None) or path.replace(":", ".").rsplit(".", 1)[-1]
        name, suffix = base, 2
        while name in names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        names.append(name)
    return names


def _check_weights(weights, count: int, setting: str, weights_setting: str) -> list[float]:
    if weights is None:
        return [1.0] * count
    if not isinstance(weights, (list, tuple)):
        raise ConfigError(f"{weights_setting} must be a list with one weight per reward function, got {weights!r}")
    if len(weights) != count:
        raise ConfigError(
            f"{weights_setting} has {len(weights)} weights for {count} reward functions in {setting}: give one "
            f"weight per function, in the same order, or leave it unset (1.0 each)"
        )
    for i, weight in enumerate(weights):
        if not isinstance(weight, Real) or isinstance(weight, bool) or not math.isfinite(weight):
            raise ConfigError(f"{weights_setting}[{i}] must be a finite number, got {weight!r}")
    return [float(weight) for weight in weights]


def _columns(fields: list[dict]) -> dict[str, list]:
    """Per-record dicts as one list per key, in first-seen key order; ``None`` where a record lacks the key."""
    keys: dict[str, None] = {}
    for record in fields:
        keys.update(dict.fromkeys(key for key in record if key not in _NOT_COLUMNS))
    return {key: [record.get(key) for record in fields] for key in keys}


def _check_signature(function: Callable, label: str, arguments: dict) -> None:
    """Refuse, before the call, a function that needs a column the data lacks or cannot take the ones it has:
    Python's own ``TypeError`` would not say that the missing name is a dataset column."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature: just call them
        return
    given = {"prompts", "completions", *arguments}
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and p.name not in given
    ]
    if missing:
        raise RewardError(
            f"reward function {label} needs the argument(s) {missing}, which the data does not provide: add "
            f"them as columns of every record (available: {sorted(arguments)}), or give them defaults"
        )
    if not any(p.kind == p.VAR_KEYWORD for p in parameters) and (unexpected := sorted(given - named)):
        raise RewardError(
            f"reward function {label} does not accept the keyword argument(s) {unexpected} (dataset columns and "
            f"extra arguments reach every function): add **kwargs to its signature"
        )


def _as_list(values, label: str) -> list:
    """A function's return value as a list: a list, tuple, 1-D tensor or array; `RewardError` otherwise."""
    if isinstance(values, torch.Tensor) and values.ndim == 1:
        return values.tolist()
    if isinstance(values, (list, tuple)) or (hasattr(values, "ndim") and values.ndim == 1):
        return list(values)
    raise RewardError(
        f"reward function {label} returned {type(values).__name__} {_shorten(repr(values))}; it must return a "
        f"list with one value (a number, or None where it does not apply) per completion"
    )


def _item(value, index: int, count: int):
    """Completion ``index``'s share of a keyword argument: a one-element list for a per-completion list,
    anything else (a setting, the trainer state) as it is."""
    if isinstance(value, list) and len(value) == count:
        return [value[index]]
    return value


def _as_reward(value, label: str, index: int, source: str) -> float:
    """``value`` as a float, ``NaN`` for ``None``; `RewardError` for anything that is not a finite number."""
    if value is None:
        return math.nan
    if not isinstance(value, Real) and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # a numpy or torch scalar
    if isinstance(value, Real) and math.isfinite(value):
        return float(value)
    raise RewardError(
        f"reward function {label} returned {_shorten(repr(value))} for completion {index} (record {source}); a reward "
        f"must be a finite number, or None where the function does not apply"
    )


def _shorten(text: str, limit: int = _SHOWN_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, keeping its start and end (where answers are)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half} characters ...] {text[-half:]}"
