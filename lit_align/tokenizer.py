"""The run's tokenizer, in a file both the data layer and the model layer may import, and the check that a model
or tokenizer path can load at all.

The data module needs the tokenizer (chat template, lengths) and must never import model loading; the modules
need it for the vocabulary size and generation. Both load it here, the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from lit_align.checks import ConfigError
from lit_align.paths import hub_offline, hub_reachable, looks_local


def resolve_path(name_or_path: str) -> str:
    """An existing local directory becomes absolute (for fingerprints that must not depend on the working
    directory); anything else is returned as it is. Loading uses the path as given (see `load_tokenizer`)."""
    return os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path


MODEL_FILES = ("config.json", "adapter_config.json")  # a model, or a LoRA export that names its base model
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


def check_model_path(name_or_path: str, key: str, files: tuple[str, ...] = MODEL_FILES) -> None:
    """Refuse, at once and naming the setting ``key``, a model or tokenizer path that cannot load.

    A name that cannot be a hub id (`lit_align.paths.looks_local`: ``./x``, ``models/x`` when ``models/`` exists,
    ...) and does not exist is "no such directory". A hub name with the hub offline (``HF_HUB_OFFLINE=1``) or
    unreachable must be in the local cache (its first of ``files`` is looked up there); otherwise the error says
    how to point ``key`` at a local copy. With the hub reachable, the hub answers. An existing directory must hold
    one of ``files`` (a folder that ``save_pretrained`` wrote).
    """
    local = Path(name_or_path).expanduser()
    if local.is_dir() and not any((local / name).is_file() for name in files):
        raise ConfigError(
            f"{key}: {name_or_path} is a directory without {' or '.join(files)}: not a folder that save_pretrained "
            "wrote (point it at the folder that holds these files)"
        )
    if local.exists():
        return
    if looks_local(name_or_path):
        relative = "" if local.is_absolute() else f" (relative paths start at {Path.cwd()})"
        raise ConfigError(f"{key}: no such directory: {name_or_path}{relative}")
    offline = hub_offline()
    if (offline is None and hub_reachable()) or _in_hub_cache(name_or_path, files[0]):
        return
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    hub = f"the Hugging Face hub is offline ({offline}=1)" if offline else f"the hub ({endpoint}) cannot be reached"
    fetch = f"with {offline} unset" if offline else "where the hub can be reached"
    raise ConfigError(
        f"{key}: {name_or_path!r} is not a local directory, {hub}, and the local cache has no copy of it. Point "
        f"{key} at a local copy (a directory with {files[0]}, e.g. from `hf download {name_or_path} --local-dir "
        f"models/{name_or_path.rsplit('/', 1)[-1]}`, run {fetch})."
    )


def _in_hub_cache(name: str, filename: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, filename), str)
    except Exception:  # not a valid repo id, or no cache at all: not cached
        return False


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained`` with a pad token (eos when the tokenizer has none) and a chat template.

    The path is passed as given (``~`` expanded): what ``from_pretrained`` records is what the user wrote."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(os.path.expanduser(name_or_path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Llama-style tokenizers ship without a pad token; padding positions are masked, so eos is safe to reuse.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(
            f"tokenizer {name_or_path!r} has no chat template; lit_align renders every example with the "
            "tokenizer's chat template. Use an instruct/chat tokenizer or set `chat_template` in its "
            "tokenizer_config.json."
        )
    return tokenizer
