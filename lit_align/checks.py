"""Settings that cannot work, refused when the object is built, with the YAML key that holds them.

A ``batch_size`` of 0 or a negative learning rate used to pass ``--print_config`` and fail only after the data
was tokenised and the model loaded, deep inside torch. Constructors call these checks instead, so the run
stops within seconds; `ConfigError` is what the CLI prints as one ``error:`` line, without a traceback.
"""

from __future__ import annotations

import math
from numbers import Real


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
    """The `ConfigError` that caused ``error``, if any: jsonargparse re-raises what a constructor raised inside a
    ``ValueError`` of its own (an optional model is a ``Union`` with ``None``) and keeps ours as the cause."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
