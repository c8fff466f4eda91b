"""Settings that cannot work, refused when the object is built, with the YAML key that holds them.

A ``batch_size`` of 0 or a negative learning rate used to pass ``--print_config`` and fail only after the data
was tokenised and the model loaded, deep inside torch. Constructors call these checks instead, so the run
stops within seconds; `ConfigError` is what the CLI prints as one ``error:`` line, without a traceback.
"""

from __future__ import annotations

import math
import traceback
from numbers import Real
from pathlib import Path


class ConfigError(ValueError):
    """A setting (named by its key, e.g. ``data.batch_size``) that cannot work. The CLI prints it alone."""


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_at_least(key: str, value, minimum: int, why: str = "") -> None:
    """``value`` is an integer ``>= minimum`` (``None`` passes: the setting is unset)."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}{why}")


def check_between(
    key: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False, why: str = ""
) -> None:
    """``value`` is a finite number in the interval (``None`` passes); the message shows the interval as written
    in mathematics, e.g. ``[0, 1)``."""
    if value is None:
        return
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    inside = (
        _is_number(value)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not inside:
        raise ConfigError(f"{key} must be in {interval}, got {value!r}{why}")


def check_positive(key: str, value, why: str = "") -> None:
    """``value`` is a finite number ``> 0`` (``None`` passes)."""
    if value is None:
        return
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{key} must be a number > 0, got {value!r}{why}")


def check_run_length(max_steps, max_epochs) -> None:
    """``trainer.max_steps`` / ``trainer.max_epochs`` of 0 train nothing, yet Lightning ends such a run with exit 0
    and the export is the starting model; -1 (or ``None`` for epochs) means "no limit" and stays allowed."""
    for key, value in (("trainer.max_steps", max_steps), ("trainer.max_epochs", max_epochs)):
        if value is not None and value != -1 and value < 1:
            raise ConfigError(f"{key} must be at least 1 (or -1: no limit), got {value}: the run would train nothing")


def config_error_in(error: BaseException) -> ConfigError | None:
    """The settings error that caused ``error``, if any: jsonargparse re-raises what a constructor raised inside a
    ``ValueError`` of its own (an optional model is a ``Union`` with ``None``) and keeps ours as the cause.

    A `ConfigError` is returned as it is. A plain ``ValueError`` raised inside lit_align while an object was built
    (a loss refusing ``label_smoothing: 0.7``: the losses import only torch, not this file) becomes one, prefixed
    with the class whose constructor refused it."""
    seen: set[int] = set()
    ours = None
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        if ours is None and type(error) is ValueError and (owner := _refusing_class(error)) is not None:
            ours = ConfigError(f"{owner}: {error}")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return ours


def _refusing_class(error: BaseException) -> str | None:
    """Name of the lit_align class whose ``__init__`` is on ``error``'s stack when the error was raised inside
    lit_align, else None (an error from a library or a bug elsewhere keeps its traceback)."""
    package = str(Path(__file__).parent)
    frames = list(traceback.walk_tb(error.__traceback__))
    if not frames or not frames[-1][0].f_code.co_filename.startswith(package):
        return None
    for frame, _ in reversed(frames):
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "__init__" and frame.f_code.co_filename.startswith(package) and owner is not None:
            return type(owner).__name__
    return None
