"""Command-line errors a person can act on: the error first and alone, with a suggestion and where to look.

jsonargparse reports a bad value nested in a recipe (``model.init_args.loss.init_args.betta``) as a tree of every
alternative it tried (including "Expected a <class 'NoneType'>" for the optional ``None`` branch), after some 60
lines of usage. The actual cause is the innermost exception of the chain it raises, and the keys and classes on
the way there are the first lines of the exceptions above it. `explain` walks that chain (jsonargparse's
structure, not the printed text) and turns it into three lines at most: the full key and what is wrong with it,
the closest accepted name (``difflib`` over the arguments jsonargparse itself reads from the class's signature),
and the ``--help`` command that lists them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

PROG = "lit_align"

_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS = re.compile(r"^Problem with given class_path '([^']+)'")
_UNKNOWN_OPTION = re.compile(r"^Option '([^']+)' is not accepted")
_NO_ATTRIBUTE = re.compile(r"^module '([^']+)' has no attribute '([^']+)'")
_EXPECTED = re.compile(r"^Expected an? (.+?)\. Got value: (.*)$", re.DOTALL)
_CALLABLE = "expects a function or a callable class:"
_CALLABLE_CLASS = re.compile(r"Got value: Namespace\(class_path='([^']+)'")
_PY_TYPE = re.compile(r"<class '(?:builtins\.)?([\w.]+)'>")


class AlignArgumentParser(LightningArgumentParser):
    """Lightning's parser, printing `explain`'s few lines instead of the usage and jsonargparse's tree.

    Nested parsers (``exit_on_error=False``) still raise, so the outermost one sees the whole chain; with
    ``JSONARGPARSE_DEBUG=1`` jsonargparse's own report is printed (and raised) as before.
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG", "").lower() in ("1", "true", "yes"):
            super().error(message, ex)
        sys.stderr.write(explain(message, ex, list(self._option_string_actions), _subcommand(self.prog)) + "\n")
        self.exit(2)


def _subcommand(prog: str) -> str:
    """The subcommand a parser serves (its ``prog`` ends with it: ``lit_align [options] validate``), for the help
    line; ``fit`` for the top-level parser."""
    last = prog.split()[-1] if prog.split() else ""
    return last if last in ("fit", "validate", "test", "predict") else "fit"


@dataclass
class _Trail:
    """What the exception chain says, outermost first: the keys (``model``, ``loss``), the class chosen under each
    key that names one, and the innermost exception."""

    steps: list[tuple[str, str]] = field(default_factory=list)  # ("key", "loss") or ("class", "a.b.C")
    innermost: BaseException | None = None


def explain(message: str, error: BaseException | None, options: list[str] | None = None, command: str = "fit") -> str:
    """The text to print for a failed parse: ``error: ...`` and at most a few indented lines.

    ``message`` is what jsonargparse would print, ``error`` the exception it came from (``None`` for argparse's own
    errors), ``options`` the option strings of the parser that failed (for "unrecognized arguments"), ``command``
    the subcommand whose ``--help`` the last line names.
    """
    if message.startswith("unrecognized arguments:"):
        return _unrecognized(message, options or [], command)
    trail = _trail(error)
    if trail.innermost is None or not trail.steps:
        return f"error: {message.strip()}\n  help: {PROG} {command} --help"
    key, classes = _key_and_classes(trail.steps)
    inner = str(trail.innermost).strip()
    help_line = _help_command(trail.steps, command)
    if match := _UNKNOWN_OPTION.match(inner):
        name = match.group(1)
        owner = classes[-1] if classes else None
        accepted = _arguments_of(owner) if owner else []
        suggestion = _did_you_mean(name, accepted)
        lines = [f"error: {key}.{name}: {owner or 'this section'} has no argument {name!r}{suggestion}"]
        if accepted:
            lines.append(f"  accepted: {', '.join(accepted)}")
        return "\n".join([*lines, help_line])
    if match := _NO_ATTRIBUTE.match(inner):
        # A class_path that does not import: the key is the class_path itself, the help is the section's.
        module, name = match.groups()
        key = key.removesuffix(".init_args") + ".class_path"
        help_line = _help_command(trail.steps[:-1])
        return "\n".join(
            [f"error: {key}: {module} has no class {name!r}{_did_you_mean(name, _public_names(module))}", help_line]
        )
    if match := _EXPECTED.match(inner):
        expected, got = match.groups()
        hint = _literal_hint(expected, got)
        return "\n".join([f"error: {key}: expected {_readable_type(expected)}, got {got!r}{hint}", help_line])
    return "\n".join([f"error: {key}: {_first_lines(inner)}", help_line])


def _trail(error: BaseException | None) -> _Trail:
    trail = _Trail()
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error).strip()
        first = text.split("\n", 1)[0]
        if _CALLABLE in first and (match := _CALLABLE_CLASS.search(text)):
            # An optimizer (a callable type): the class and, after the colon, the rest of the chain, in one line.
            if trail.steps[-1:] != [("class", match.group(1))]:
                trail.steps.append(("class", match.group(1)))
            first = first.split(_CALLABLE, 1)[1]
        if (match := _KEY.search(first)) and trail.steps[-1:] != [("key", match.group(1))]:
            trail.steps.append(("key", match.group(1)))
        elif match := _CLASS.match(first):
            trail.steps.append(("class", match.group(1)))
        trail.innermost = error
        error = error.__cause__ or error.__context__
    return trail


def _key_and_classes(steps: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The dotted key as a user writes it (``model.init_args.loss.init_args``; a dataclass's fields sit directly
    under its key, without ``init_args``), and the classes on the way."""
    parts: list[str] = []
    classes: list[str] = []
    for kind, value in steps:
        if kind == "key":
            parts.append(value)
        else:
            classes.append(value)
            if not dataclasses.is_dataclass(_import(value)):
                parts.append("init_args")
    return ".".join(parts), classes


def _help_command(steps: list[tuple[str, str]], command: str = "fit") -> str:
    """``lit_align fit --model A --model.init_args.loss.help B``: the help of the innermost class that can be chosen
    by ``class_path``, with the classes above it named first (jsonargparse needs them to find the key)."""
    chosen: list[tuple[str, str]] = []  # (key, class path) for each class chosen by class_path
    parts: list[str] = []
    for kind, value in steps:
        if kind == "key":
            parts.append(value)
        elif not dataclasses.is_dataclass(_import(value)):
            chosen.append((".".join(parts), value))
            parts.append("init_args")
    if not chosen:
        return f"  help: {PROG} {command} --help"
    args = [f"--{key} {class_path}" for key, class_path in chosen[:-1]]
    key, class_path = chosen[-1]
    return f"  help: {' '.join([PROG, command, *args, f'--{key}.help {class_path}'])}"


def _unrecognized(message: str, options: list[str], command: str = "fit") -> str:
    words = message.split(":", 1)[1].split()
    lines = []
    for word in words:
        if not word.startswith("--"):
            continue
        name = word.split("=", 1)[0]
        prefix = name.rsplit(".", 1)[0] + "." if "." in name else "--"
        siblings = [o for o in options if o.startswith(prefix)] or options
        lines.append(f"error: {name[2:]}: no such option{_did_you_mean(name, siblings)}")
    if not lines:
        lines.append(f"error: {message}")
    return "\n".join([*lines, f"  help: {PROG} {command} --help"])


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _literal_hint(expected: str, got: str) -> str:
    choices = re.findall(r"'([^']*)'", expected) if expected.startswith("typing.Literal[") else []
    return _did_you_mean(got, choices)


def _readable_type(expected: str) -> str:
    if expected.startswith("typing.Literal[") and expected.endswith("]"):
        return "one of " + expected[len("typing.Literal[") : -1]
    return _PY_TYPE.sub(r"\1", expected).replace("typing.", "")


def _first_lines(text: str, limit: int = 8) -> str:
    lines = [line for line in text.split("\n") if line.strip()]
    return "\n  ".join(lines[:limit] + (["..."] if len(lines) > limit else []))


def _import(class_path: str):
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _public_names(module: str) -> list[str]:
    try:
        return [name for name in dir(importlib.import_module(module)) if not name.startswith("_")]
    except ImportError:
        return []


def _arguments_of(class_path: str) -> list[str]:
    """The arguments jsonargparse accepts for the class: its signature, with ``**kwargs`` followed up the class
    chain as jsonargparse does (``PreferenceModule`` takes ``AlignModule``'s arguments too)."""
    import torch
    from jsonargparse import ArgumentParser

    cls = _import(class_path)
    if cls is None:
        return []
    parser = ArgumentParser(exit_on_error=False)
    try:
        parser.add_class_arguments(cls, "x", sub_configs=True)
    except Exception:  # a class jsonargparse cannot describe: no suggestion, the error itself still stands
        return []
    names: list[str] = []
    for action in parser._actions:
        if action.dest.startswith("x."):
            name = action.dest[2:].split(".")[0]
            if name not in names and name != "help":
                names.append(name)
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        names = [name for name in names if name != "params"]  # the module passes them: never a setting
    return names
