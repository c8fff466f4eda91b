"""The axes of a sweep: ``--grid KEY=[v1,v2]`` and ``--set KEY=VALUE`` parsed, and the names runs get from them.

Each value is handed to ``lit_align fit`` as ``--KEY=<text>``, and jsonargparse parses that text again, so a
scalar keeps the text the user wrote (``1e-3`` stays ``1e-3`` instead of becoming whatever PyYAML makes of it);
``null`` stands for None and a mapping or list travels as JSON. The special key ``config`` makes the recipe
itself an axis: its values are YAML files added as ``--config``.

Every setting (one value per axis) gets a slug, its folder name (``beta-0.05_rule-FixedBeta``), and a label for
tables and plots (``beta=0.05, rule=FixedBeta``). Slugs must be stable, so that the same command finds the same
folders again, and filesystem-safe; two settings whose slugs would collide get ``-2``, ``-3``... in grid order.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CONFIG_KEY = "config"
OWNED_KEYS = ("seed_everything", "trainer.logger")
"""Settings the sweep sets itself for every run (the seed, and the logger that puts each run in its folder)."""

_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_SLUG = 48


class SweepError(ValueError):
    """A sweep setting that cannot work; the message names the flag and the text it came from."""


@dataclass(frozen=True)
class AxisValue:
    """One value of an axis: ``text`` follows ``--KEY=`` (a config axis: the YAML path), ``slug`` names its folder
    part and ``label`` its table and legend entry (a caller's own label is used as it is)."""

    text: str
    slug: str
    label: str
    custom_label: bool = False


@dataclass(frozen=True)
class Axis:
    key: str
    name: str
    values: tuple[AxisValue, ...]

    @property
    def is_config(self) -> bool:
        return self.key == CONFIG_KEY


@dataclass(frozen=True)
class Setting:
    """One point of the grid: a value for every axis (by axis key), in the order of the axes."""

    slug: str
    label: str
    values: dict[str, AxisValue] = field(default_factory=dict)


def safe_slug(text: str) -> str:
    """``text`` as a folder name part: letters, digits and ``._+-`` only, runs of anything else one ``-``, at most
    48 characters. A leading minus stays (``-1`` and ``1`` are different values)."""
    sign = "-" if text.startswith("-") and len(text) > 1 and text[1].isdigit() else ""
    slug = sign + _UNSAFE.sub("-", text).strip("-.")[: MAX_SLUG - len(sign)].strip("-.")
    return slug if slug.strip("-") else "value"


def _short(text: str) -> str:
    """The last component of a class path (``lit_align.losses.beta_rules.FixedBeta`` -> ``FixedBeta``)."""
    return text.rsplit(".", 1)[-1] if _CLASS_PATH.fullmatch(text) else text


def _value(node: yaml.Node, python: object) -> tuple[str, str]:
    """(text for the command line, short form for slugs and labels) of one list item."""
    if isinstance(node, yaml.ScalarNode):
        text = "null" if python is None else node.value
        return text, _short(text)
    text = json.dumps(python, separators=(",", ":"))
    if isinstance(python, dict) and isinstance(python.get("class_path"), str):
        return text, _short(python["class_path"])
    return text, text


def check_key(key: str, flag: str, text: str) -> str:
    if not _KEY.fullmatch(key):
        raise SweepError(
            f"{flag} {text!r}: {key!r} is not a dotted setting name (e.g. model.init_args.loss.init_args.beta)"
        )
    if any(key == owned or key.startswith(owned + ".") for owned in OWNED_KEYS):
        raise SweepError(f"{flag} {text!r}: the sweep sets {key} itself for every run (use --seeds for seeds)")
    return key


def parse_grid(text: str, labels: dict[str, str] | None = None) -> Axis:
    """``KEY=[v1,v2,...]`` (a YAML flow list) as an axis; ``labels`` maps a value's text to a caller's label."""
    key, sep, values_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SweepError(
            f"--grid {text!r}: expected KEY=[v1,v2,...], e.g. model.init_args.loss.init_args.beta=[0.05,0.1]"
        )
    if key != CONFIG_KEY:
        check_key(key, "--grid", text)
    try:
        node = yaml.compose(values_text, Loader=yaml.SafeLoader)
        python = yaml.safe_load(values_text)
    except yaml.YAMLError as error:
        raise SweepError(f"--grid {text!r}: the values are not valid YAML ({error})") from None
    if not isinstance(node, yaml.SequenceNode) or not isinstance(python, list):
        raise SweepError(f"--grid {text!r}: the values must be a list in brackets, e.g. {key}=[0.05,0.1]")
    if not python:
        raise SweepError(f"--grid {text!r}: the list is empty; give at least one value")
    if key == CONFIG_KEY:
        if not all(isinstance(item, str) for item in python):
            raise SweepError(f"--grid {text!r}: each config value must be a YAML file path")
        return config_axis(python, labels)
    values = []
    for item_node, item in zip(node.value, python, strict=True):
        value_text, short = _value(item_node, item)
        custom = labels is not None and value_text in labels
        label = labels[value_text] if custom else short
        values.append(AxisValue(value_text, safe_slug(short), label, custom))
    _check_unique(values, text)
    return Axis(key, key.rsplit(".", 1)[-1], tuple(values))


def config_axis(paths: list[str], labels: dict[str, str] | None = None) -> Axis:
    """The recipe as an axis: each path's slug is its parent folder and stem (``beta_dpo-quickstart``)."""
    values = []
    for path in paths:
        short = f"{Path(path).parent.name}/{Path(path).stem}".lstrip("/")
        custom = labels is not None and path in labels
        values.append(AxisValue(path, safe_slug(short.replace("/", "-")), labels[path] if custom else short, custom))
    _check_unique(values, f"config={paths}")
    return Axis(CONFIG_KEY, CONFIG_KEY, tuple(values))


def _check_unique(values: list[AxisValue], text: str) -> None:
    seen = [value.text for value in values]
    repeated = sorted({value for value in seen if seen.count(value) > 1})
    if repeated:
        raise SweepError(f"--grid {text!r}: {', '.join(repeated)} appears more than once")


def parse_set(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as ``(KEY, VALUE)``; VALUE is passed on as written."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SweepError(f"--set {text!r}: expected KEY=VALUE, e.g. trainer.max_steps=20")
    return check_key(key.strip(), "--set", text), value


def name_axes(axes: list[Axis]) -> list[Axis]:
    """Axes whose short names collide (``loss.init_args.beta``, ``other.beta``) get longer dotted suffixes."""
    keys = [axis.key for axis in axes]
    if len(set(keys)) < len(keys):
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        raise SweepError(f"--grid: {', '.join(repeated)} is given more than once; put all its values in one list")
    named = []
    for axis in axes:
        parts = axis.key.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[-depth:])
            if not any(other.key != axis.key and other.key.split(".")[-depth:] == parts[-depth:] for other in axes):
                break
        named.append(Axis(axis.key, name, axis.values))
    return named


def _label(axis: Axis, value: AxisValue) -> str:
    return value.label if value.custom_label else f"{axis.name}={value.label}"


def settings(axes: list[Axis]) -> list[Setting]:
    """The Cartesian product of the axes, in grid order (the first axis varies slowest); no axes: one setting."""
    out, used = [], {}
    for combo in itertools.product(*(axis.values for axis in axes)):
        pairs = list(zip(axes, combo, strict=True))
        slug = "_".join(v.slug if a.is_config else f"{safe_slug(a.name)}-{v.slug}" for a, v in pairs) or "base"
        used[slug] = used.get(slug, 0) + 1
        if used[slug] > 1:
            slug = f"{slug}-{used[slug]}"
        label = ", ".join(_label(axis, value) for axis, value in pairs) or "base recipe"
        out.append(Setting(slug, label, {axis.key: value for axis, value in pairs}))
    return out
