"""The runs of a sweep: settings × seeds, each with its folder and the ``lit_align fit`` command that fills it.

Every run goes through the command a user types, in a subprocess with the repository root as working directory
(so the relative paths inside the recipes resolve as they do for a user). Its folder is
``<output>/runs/<setting slug>/seed-<seed>``, made by overriding the recipe's logger with a TensorBoard logger
whose ``version`` is ``seed-<seed>``: the folder is known before the run starts, which is what lets a second
call of the same sweep find it again.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from lit_align.sweeps.grid import CONFIG_KEY, Axis, Setting, SweepError


@dataclass(frozen=True)
class PlannedRun:
    setting: Setting
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        """``<setting slug>/seed-<seed>``, as progress lines and warnings name the run."""
        return f"{self.setting.slug}/seed-{self.seed}"


def parse_seeds(text: str) -> list[int]:
    """``N`` -> seeds 1..N; ``1,7,42`` -> those seeds."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        numbers = [int(part) for part in parts if part]
    except ValueError:
        raise SweepError(f"--seeds {text!r}: expected a count (3) or a comma list of integer seeds (1,7,42)") from None
    if not numbers:
        raise SweepError(f"--seeds {text!r}: no seed given")
    if len(parts) == 1:
        if numbers[0] < 1:
            raise SweepError(f"--seeds {text!r}: the number of seeds must be at least 1")
        return list(range(1, numbers[0] + 1))
    if any(seed < 0 for seed in numbers) or len(set(numbers)) < len(numbers):
        raise SweepError(f"--seeds {text!r}: seeds must be distinct and not negative")
    return numbers


def config_path(path: str | Path, root: Path, flag: str = "--config") -> str:
    """A recipe path as the sweep records and passes it: relative to the repository root when it lies inside
    (the runs' working directory), else absolute. A missing file stops the sweep before anything runs."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        resolved_in_root = (root / path).resolve()
        if not resolved_in_root.is_file():
            raise SweepError(f"{flag} {path}: no such file (relative paths are read from {Path.cwd()} or {root})")
        resolved = resolved_in_root
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def plan_runs(settings: list[Setting], seeds: list[int], output: Path) -> list[PlannedRun]:
    """Every setting with every seed, setting by setting."""
    return [PlannedRun(s, seed, output / "runs" / s.slug / f"seed-{seed}") for s in settings for seed in seeds]


def run_configs(base_configs: list[str], setting: Setting) -> list[str]:
    """The base recipes, then the setting's own recipe when the config is an axis."""
    own = setting.values.get(CONFIG_KEY)
    return [*base_configs, own.text] if own is not None else list(base_configs)


def overrides(sets: list[tuple[str, str]], setting: Setting) -> list[tuple[str, str]]:
    """``(key, text)`` of the fixed ``--set`` values, then the setting's grid values."""
    grid = [(key, value.text) for key, value in setting.values.items() if key != CONFIG_KEY]
    return [*sets, *grid]


def fit_command(run: PlannedRun, base_configs: list[str], sets: list[tuple[str, str]]) -> list[str]:
    """``python -m lit_align fit`` for one run: its recipes, overrides, seed and the logger that names its folder.

    The progress bar is off: its output goes to a log file, where redrawn lines are only noise."""
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {
            "save_dir": str(run.run_dir.parent.parent),
            "name": run.setting.slug,
            "version": run.run_dir.name,
        },
    }
    command = [sys.executable, "-m", "lit_align", "fit"]
    for config in run_configs(base_configs, run.setting):
        command += ["--config", config]
    command += [f"--{key}={text}" for key, text in overrides(sets, run.setting)]
    command += [
        f"--seed_everything={run.seed}",
        f"--trainer.logger={json.dumps(logger)}",
        "--trainer.enable_progress_bar=false",
    ]
    return command


def _lookup(config: dict, dotted: str) -> object:
    node: object = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def run_length(configs: list[str], overrides_: list[tuple[str, str]], root: Path) -> tuple[int | None, int | None]:
    """``(max_steps, max_epochs)`` of a run: the last recipe that sets each, then the overrides. -1 steps, as
    Lightning's default, comes back as None."""
    found: dict[str, object] = {}
    for config in configs:
        path = Path(config) if Path(config).is_absolute() else root / config
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for key in ("trainer.max_steps", "trainer.max_epochs"):
            value = _lookup(loaded, key) if isinstance(loaded, dict) else None
            if value is not None:
                found[key] = value
    for key, text in overrides_:
        if key in ("trainer.max_steps", "trainer.max_epochs"):
            found[key] = yaml.safe_load(text)
    steps, epochs = found.get("trainer.max_steps"), found.get("trainer.max_epochs")
    steps = steps if isinstance(steps, int) and steps > 0 else None
    return steps, epochs if isinstance(epochs, int) else None


def length_text(steps: int | None, epochs: int | None) -> str:
    """``200`` steps, ``max_epochs=3`` when steps are not set, or ``?`` when neither is."""
    if steps is not None:
        return str(steps)
    return f"max_epochs={epochs}" if epochs is not None else "?"


def axes_record(axes: list[Axis]) -> dict[str, list[str]]:
    """The axes for sweep.json: key -> value texts."""
    return {axis.key: [value.text for value in axis.values] for axis in axes}
