"""Training from a prepared-data folder (``data.prepared``): data prepared on one machine, trained on another.

A cluster job may not see the sources (a laptop's files, a hub dataset behind a firewall), and preparing 160k pairs
on every node of a job wastes its first minutes. ``scripts/prepare_data.py --output DIR`` writes ``DIR/train`` and
``DIR/val`` in the data cache's format (`lit_align.data.cache`), and ``data.prepared: DIR`` memory-maps them.

The data cache can trust a folder because its key hashes the sources' contents. Here the sources may not exist, so
no key can be computed: instead each ``meta.json`` records the recipe it was made from, and the recipe that loads
it must agree where agreeing matters:

- the tokenizer: its files' digests, chat template, special tokens and class (not its path, which differs between
  machines; a ``transformers`` version that differs is a warning, since the same files usually tokenise the same);
- every `PrepareSettings` field, all differences listed at once;
- the source names, when the recipe lists sources: the sampler weighs sources by name, and the recipe's weights
  are used. A recipe without training sources takes the stored ones, with their weights.

Each disagreement is a `ConfigError` naming ``data.prepared``, the folder, the field and both values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lit_align.checks import ConfigError
from lit_align.data.cache import DATA_CACHE_VERSION, load_prepared, recipe_fields
from lit_align.data.prepare import DataSource, PreparedData, PrepareSettings
from lit_align.data.read import source_name

SPLITS = ("train", "val")
_REDO = "Re-run scripts/prepare_data.py --output with this recipe, or change the recipe to match the folder"
_TOKENIZER_FIELDS = ("class", "files", "chat_template", "special_tokens")
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class PreparedDir:
    """What a prepared-data folder gives a data module: both splits and the sources to report and weigh them by."""

    train: PreparedData
    val: PreparedData
    train_sources: list[DataSource]
    val_sources: list[DataSource]


def read_meta(folder: Path, split: str) -> dict[str, Any] | None:
    """``folder/split/meta.json``, checked to be a prepared split of this data version that records its recipe;
    None for a ``val`` split the folder does not have."""
    path = folder / split / "meta.json"
    if not folder.is_dir():
        raise ConfigError(
            f"data.prepared: no such folder {folder}. Give the --output folder of scripts/prepare_data.py"
        )
    if not path.is_file():
        if split == "val" and (folder / "train" / "meta.json").is_file():
            return None
        hint = " (it holds one split: give the folder above it)" if (folder / "meta.json").is_file() else ""
        raise ConfigError(
            f"data.prepared: {folder} is not a prepared-data folder: {path} does not exist{hint}. Make one with "
            f"`python scripts/prepare_data.py --config <recipe> --output {folder}`"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"data.prepared: {path} cannot be read ({error}). {_REDO}") from None
    if meta.get("version") != DATA_CACHE_VERSION:
        raise ConfigError(
            f"data.prepared: {path} field version: the folder was written for data version {meta.get('version')}, "
            f"this lit_align reads version {DATA_CACHE_VERSION}. Re-run scripts/prepare_data.py --output with this "
            "version of lit_align"
        )
    if missing := [field for field in ("sources", "settings", "tokenizer") if field not in meta]:
        raise ConfigError(
            f"data.prepared: {path} does not record {', '.join(missing)} (written before prepared folders recorded "
            "their recipe), so it cannot be checked against this recipe. Re-run scripts/prepare_data.py --output"
        )
    return meta


def check_tokenizer(stored: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Raise unless the tokenizer fingerprints agree on files, chat template, special tokens and class; warn when
    only the ``transformers`` version differs."""
    details = []
    for field in _TOKENIZER_FIELDS:
        before, now = stored.get(field), current.get(field)
        if isinstance(before, dict) and isinstance(now, dict):  # files, special tokens: only the entries that differ
            for key in sorted(set(before) | set(now), key=str):
                if before.get(key) != now.get(key):
                    details.append(
                        f"{field} {key}: {_short(before.get(key))} in the folder, {_short(now.get(key))} now"
                    )
        elif before != now:
            details.append(f"{field}: {_short(before)} in the folder, {_short(now)} now")
    if details:
        raise ConfigError(
            f"data.prepared: {path} field tokenizer: the folder was prepared with another tokenizer "
            f"({'; '.join(details)}). Re-run scripts/prepare_data.py --output with this recipe's tokenizer, or give "
            "the model (data.tokenizer) the tokenizer the folder was prepared with"
        )
    if stored.get("transformers") != current.get("transformers"):
        rank_zero_warn(
            f"data.prepared: {path.parent.parent} was tokenised under transformers {stored.get('transformers')}, "
            f"this run has {current.get('transformers')}: the tokenizer files are the same, but re-run "
            "scripts/prepare_data.py if its results might differ"
        )


def check_settings(stored: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Raise listing every `PrepareSettings` field whose value differs between the folder and the recipe."""
    fields = sorted(set(stored) | set(current))
    differing = [field for field in fields if stored.get(field) != current.get(field)]
    if not differing:
        return
    details = []
    for field in differing:
        key, before = _setting(field, stored.get(field))
        details.append(f"{key} {before!r} in the folder, {_setting(field, current.get(field))[1]!r} in the recipe")
    raise ConfigError(
        f"data.prepared: {path} field settings: the folder was prepared with other settings: {'; '.join(details)}. "
        f"{_REDO}"
    )


def matched_sources(recipe: list[DataSource], meta: dict[str, Any], path: Path, split: str) -> list[DataSource]:
    """The split's sources: the recipe's (in the stored order, so their weights follow their names) when it lists
    any, else the stored ones under their stored names. Raise when the recipe's names are not the stored ones."""
    stored = [DataSource(**fields) for fields in meta["sources"]]
    names = [report["name"] for report in meta["reports"]]
    if not recipe:
        return [DataSource(**{**fields, "name": name}) for fields, name in zip(meta["sources"], names, strict=True)]
    given = [_recipe_name(source, stored, names) for source in recipe]
    if sorted(given) != sorted(names) or len(set(given)) != len(given):
        raise ConfigError(
            f"data.prepared: {path} field sources: the folder's {split} sources are named {names}, data.{split} in "
            f"the recipe names {given}. {_REDO} (or set `name:` on the recipe's sources as in the folder, or leave "
            f"data.{split} out to use the folder's sources and weights)"
        )
    by_name = dict(zip(given, recipe, strict=True))
    return [by_name[name] for name in names]


def load_prepared_dir(
    folder: str | Path,
    train_sources: list[DataSource],
    val_sources: list[DataSource],
    settings: PrepareSettings,
    tokenizer,
) -> PreparedDir:
    """Both splits of ``folder``, memory-mapped, after every check of the module docstring; no source is read."""
    folder = Path(folder).expanduser()
    current = recipe_fields([], settings, tokenizer)
    loaded, sources = {}, {}
    for split, recipe in (("train", train_sources), ("val", val_sources)):
        meta = read_meta(folder, split)
        if meta is None:
            if recipe:
                raise ConfigError(
                    f"data.prepared: {folder} has no val split, but the recipe lists data.val sources. Re-run "
                    "scripts/prepare_data.py --output with the val sources, or remove data.val"
                )
            loaded[split], sources[split] = PreparedData([], [], []), []
            continue
        path = folder / split / "meta.json"
        check_tokenizer(meta["tokenizer"], current["tokenizer"], path)
        check_settings(meta["settings"], current["settings"], path)
        sources[split] = matched_sources(recipe, meta, path, split)
        try:
            loaded[split] = load_prepared(folder / split, None)
        except Exception as error:  # a truncated copy, a missing file: say which folder, not a deep Arrow trace
            raise ConfigError(f"data.prepared: {folder / split} is incomplete or damaged ({error}). {_REDO}") from None
    return PreparedDir(loaded["train"], loaded["val"], sources["train"], sources["val"])


def _setting(field: str, value: Any) -> tuple[str, Any]:
    """The recipe key and value a `PrepareSettings` field comes from (``drop_in_train`` is ``val_in_train``)."""
    if field == "drop_in_train":
        return "data.val_in_train", "drop" if value else "warn"
    return f"data.{field}", value


def _recipe_name(source: DataSource, stored: list[DataSource], names: list[str]) -> str:
    """A recipe source's name without reading it: its ``name``, else that of the stored source with its path and
    split, else the name its path gives (a file's stem also when the file is not on this machine)."""
    if source.name:
        return source.name
    for other, name in zip(stored, names, strict=True):
        if other.path == source.path and other.split == source.split:
            return name
    name = source_name(source.path)
    if name == source.path and Path(source.path.removesuffix(".gz")).suffix in _DATA_SUFFIXES:
        name = Path(source.path.removesuffix(".gz")).stem
    return name


def _short(value: Any) -> str:
    """A value for an error message: long texts (a chat template) cut, a file's ``[size, sha256]`` shortened."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str) and len(value[1]) == 64:
        return f"{value[0]} bytes sha256 {value[1][:12]}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
