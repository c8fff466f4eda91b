"""Train from a GGUF file (llama.cpp's one-file format): convert it once to a plain float32 Hugging Face directory.

transformers reads a GGUF (``from_pretrained(dir, gguf_file=...)``) by de-quantising every tensor to float32, which
takes 20-120 s for a 135M model on a laptop CPU, and it refuses to ``save_pretrained`` a model loaded that way. A
run loads its model more than once (the policy, a reference, the precomputed reference's pass, a merge after
training) and its LoRA export must name a base model that loads; threading the GGUF file through each of those
would be slow and leave exports that only lit_align can read. So the file is converted once, here, to an ordinary
directory (``config.json``, ``model.safetensors``, tokenizer files with the chat template, ``generation_config``),
and everything downstream sees a path like any other. The cost is disk: a float32 copy, four to eight times the
size of a 4-bit GGUF.

The directory is ``<cache>/<hash>``, the first 16 hex digits of the file's SHA-256: a re-downloaded or moved file
reuses it, a changed file gets a new one. The conversion is written to a hidden sibling and renamed into place,
so a killed conversion never leaves a directory that looks complete. A lock file makes the processes of one
machine (the ranks of a DDP run) convert one at a time: the first converts, the others then find the directory.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import shutil
import time
import uuid
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_align.checks import ConfigError
from lit_align.paths import looks_local

_HASH_LENGTH = 16
_STALE_SECONDS = 3600  # a hidden temporary directory this old belongs to a conversion that was killed


def default_cache_dir() -> Path:
    """``$LIT_ALIGN_CACHE/gguf`` if set, else ``$XDG_CACHE_HOME/lit_align/gguf`` (``~/.cache/lit_align/gguf``)."""
    if os.environ.get("LIT_ALIGN_CACHE"):
        return Path(os.environ["LIT_ALIGN_CACHE"]).expanduser() / "gguf"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lit_align" / "gguf"


def file_hash(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (a 100 MB file hashes in well under a second)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:_HASH_LENGTH]


def gguf_to_hf_dir(
    name_or_path: str, gguf_file: str, cache_dir: Path | None = None, *, key: str = "model.init_args.gguf_file"
) -> Path:
    """The cached float32 Hugging Face directory of ``gguf_file`` inside ``name_or_path``, converted on first use.

    ``name_or_path`` is a local directory holding the file, or a hub repository (the file is downloaded first).
    ``cache_dir`` holds one ``<hash>`` directory per GGUF file (default `default_cache_dir`). ``key`` is the
    setting a missing file is reported under. The result loads with plain ``from_pretrained(path)``.
    """
    source = locate_gguf(name_or_path, gguf_file, key)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / file_hash(source)
    if _is_complete(target):
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"{key}: reading a GGUF file needs the `gguf` package: pip install 'lit_align[gguf]'")
    rank_zero_info(f"converting {source} to a float32 Hugging Face model once; cached at {target}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # a dependency of huggingface_hub, so always there with transformers

    with FileLock(str(cache_dir / f".{target.name}.lock")):
        if _is_complete(target):  # another process converted it while this one waited
            return target
        _remove_stale_temporaries(cache_dir, target.name)
        started = time.monotonic()
        temporary = cache_dir / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            convert_gguf(source, temporary)
            _move_into_place(temporary, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        rank_zero_info(f"converted {source.name} in {time.monotonic() - started:.0f} s")
    return target


def locate_gguf(name_or_path: str, gguf_file: str, key: str = "model.init_args.gguf_file") -> Path:
    """The local path of ``gguf_file`` in a directory or hub repository; a `ConfigError` naming ``key`` if absent."""
    directory = Path(name_or_path).expanduser()
    if directory.is_dir():
        path = directory / gguf_file
        if path.is_file():
            return path
        found = sorted(p.name for p in directory.glob("*.gguf"))
        listing = f"the .gguf files there: {', '.join(found)}" if found else "there is no .gguf file there"
        raise ConfigError(f"{key}: no file {gguf_file!r} in {name_or_path} ({listing})")
    if directory.exists() or looks_local(name_or_path):
        raise ConfigError(f"{key}: {gguf_file!r} is to be read from {name_or_path}, which is not a directory")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(name_or_path, gguf_file))
    except Exception as error:  # no such repository or file, offline and not cached, no network, ...
        reason = str(error).rstrip(".")
        raise ConfigError(
            f"{key}: cannot get {gguf_file!r} from the hub repository {name_or_path!r}: {reason}. Download it "
            f"(`hf download {name_or_path} {gguf_file} --local-dir DIR`) and set model_name_or_path to DIR."
        ) from error


def convert_gguf(source: Path, out: Path) -> None:
    """Write the de-quantised model of ``source`` to ``out`` as a plain float32 ``save_pretrained`` directory.

    transformers keeps a GGUF-loaded model marked as quantized (``quantization_config``, ``hf_quantizer``) and will
    not save it. The same weights are put into a model built from a clean copy of its config instead: parameters
    created on the meta device and then assigned the loaded tensors, so the weights exist once in memory, not twice.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    for leftover in ("quantization_config", "_model_name_or_path"):  # the GGUF's own name, not a path
        if hasattr(config, leftover):
            delattr(config, leftover)
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    # Buffers outside the state dict (rotary frequencies) were made on the meta device too; the loaded model has
    # the same modules, so its computed values fit.
    loaded_modules = dict(loaded.named_modules())
    for module_name, module in model.named_modules():
        for buffer in module._non_persistent_buffers_set:
            setattr(module, buffer, getattr(loaded_modules[module_name], buffer))
    model.tie_weights()
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"converting {source}: no weights in the GGUF file for {on_meta[:3]}")
    model.generation_config = copy.deepcopy(loaded.generation_config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _is_complete(directory: Path) -> bool:
    # Only a rename creates the directory, after everything was written into it.
    return (directory / "config.json").is_file()


def _move_into_place(temporary: Path, target: Path) -> None:
    if target.exists() and not _is_complete(target):  # not written by a conversion: a leftover made by hand
        shutil.rmtree(target)
    try:
        os.replace(temporary, target)
    except OSError:
        if not _is_complete(target):
            raise
        # Another machine sharing this cache directory (whose lock did not reach this one) finished first.


def _remove_stale_temporaries(cache_dir: Path, name: str) -> None:
    """Delete the hidden directories of killed conversions of ``name``: those older than an hour (a conversion
    creates its directory only when it starts writing, minutes at most before the rename). Called under the lock."""
    for temporary in cache_dir.glob(f".{name}.*.tmp"):
        if time.time() - temporary.stat().st_mtime > _STALE_SECONDS:
            shutil.rmtree(temporary, ignore_errors=True)
