"""``reference: precomputed``: reference log-probs computed once before training, so a preference loss trains
with no reference model in memory.

``reference: precomputed`` trades one extra pass over the data, and a file of 8 bytes per pair, for the memory of
a second model (``copy``) or the reference forward of every step (``adapter_off``). Before the first training or
validation step the module builds the reference (the policy with its LoRA adapter switched off, or else a fresh
load of the starting weights, deleted after the pass), scores every example of the split once (no gradient, eval
mode, the run's precision) and keeps a table ``[n_examples, 2]`` of (chosen, rejected) log-prob sums, which
batches index by their ``split`` and ``index``.

A fresh load rather than a copy of the policy: on resume the policy already holds trained weights, and under a
sharded strategy it is not a plain model. The one difference from ``copy``: rows that ``load_causal_lm`` adds to
the embeddings for a longer tokenizer are drawn at random, so they differ from the policy's draw.

Each split has its own file, ``<cache dir>/ref_logps-<key>.safetensors``. The key is the SHA-256 of

- the reference weights: the resolved path (a hub name resolves to its local snapshot, whose path names the commit)
  and the name, size and modification time of every file in that directory. Cheap, known before anything is
  loaded, and rewriting a weight file changes its mtime. Also the rest of the `ModelSettings` (dtype, attention
  implementation, quantization), the vocabulary size and the trainer's precision, which change the numbers;
- the data: every token id and label of every example of the split, in order (the chat template, ``max_length``
  and truncation are all in there);
- the module's ``key_settings``: which class scores, and what else its reference sees (preference-guided DPO
  adds its soft prompt).

The file is written to a temporary name and renamed, so a killed run leaves no half file, and a restart with the
same key reuses it.

Under DDP and sharded strategies each rank scores a disjoint share, examples ``rank::world_size``, padded so every
rank runs the same number of forwards (FSDP needs that), and the shares are all-gathered: every rank holds the
whole table. Global rank 0 alone reads and writes the file and broadcasts what it read, so nodes need no shared
file system.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info
from safetensors.torch import load_file, save
from torch import nn

from lit_align.data.batch import PreferenceBatch
from lit_align.data.digest import examples_digest
from lit_align.data.table import column
from lit_align.models.loading import ModelSettings, disable_dropout
from lit_align.modules.reference import Loader, Reference, Scorer
from lit_align.tokenizer import resolve_path

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: the key holds the ModelSettings and the scoring class (format 1 held method names)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lit_align/reference_logps`` (``~/.cache/...`` by default): outside the run directory, so
    every run on the same data and weights reuses the files; the content-derived key makes sharing safe."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lit_align" / "reference_logps"


def model_fingerprint(name_or_path: str) -> dict[str, Any]:
    """The resolved directory of a model and ``(name, size, mtime_ns)`` of each file in it."""
    path = resolve_path(name_or_path)
    directory = Path(path) if os.path.isdir(path) else _hub_snapshot(path)
    if directory is None:
        return {"name": name_or_path}
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir() if f.is_file())
    return {"path": str(directory), "files": files}


def _hub_snapshot(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not a hub name, or not in the local cache: the name alone identifies it
        return None


def cache_key(
    model: ModelSettings, precision: str, key_settings: dict[str, Any], split: str, examples: Sequence[dict]
) -> str:
    """The SHA-256 that names a split's cache file (see the module docstring)."""
    loading = {k: v for k, v in dataclasses.asdict(model).items() if k != "name_or_path"}
    settings = {
        "format": CACHE_FORMAT,
        "reference": model_fingerprint(model.name_or_path),
        "loading": loading,
        "precision": precision,
        "module_settings": key_settings,
        "split": split,
        "count": len(examples),
        "examples": examples_digest(examples),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def save_reference_logps(path: Path, table: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write ``table`` ``[n, 2]`` as safetensors, atomically (temporary file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tensors = {
        "reference_chosen_logps": table[:, 0].contiguous().cpu(),
        "reference_rejected_logps": table[:, 1].contiguous().cpu(),
    }
    try:
        with open(temporary, "wb") as file:
            file.write(save(tensors, metadata=metadata))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_reference_logps(path: Path, count: int) -> torch.Tensor | None:
    """The table ``[count, 2]`` stored at ``path``, or None when the file is missing, unreadable or of another size."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        table = torch.stack([tensors["reference_chosen_logps"], tensors["reference_rejected_logps"]], dim=1)
    except Exception as error:
        log.warning("ignoring unreadable reference log-prob cache %s: %s", path, error)
        return None
    if table.shape != (count, 2):
        log.warning("ignoring reference log-prob cache %s: shape %s, expected (%d, 2)", path, tuple(table.shape), count)
        return None
    return table.float()


class PrecomputedReference(Reference):
    """Reference log-probs from tables filled by ``prepare`` (see the module docstring).

    Args:
        model: How the reference loads: the policy's `ModelSettings`, with ``reference_model_name_or_path`` as its
            path when one is given.
        cache_dir: Where the files go; default `default_cache_dir`.
        adapter_off: Score with the policy's adapter switched off (LoRA and no other reference model) instead of
            loading the reference for the pass.
    """

    def __init__(self, model: ModelSettings, cache_dir: str | None = None, adapter_off: bool = False) -> None:
        super().__init__()
        self.model_settings = model
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.adapter_off = adapter_off
        self.tables: dict[str, tuple[str, torch.Tensor]] = {}
        """Split name to (cache key, table ``[n_examples, 2]`` of reference chosen and rejected log-probs)."""

    def logps(self, batch: PreferenceBatch, score: Scorer, policy: nn.Module) -> torch.Tensor:
        """Reference log-probs ``[2n]`` of a batch (chosen rows, then rejected rows), looked up by its ``split``
        and ``index``."""
        if batch.index is None or batch.split is None:
            raise ValueError(
                "reference: precomputed looks reference log-probs up by the batch's `index` and `split`, which "
                "AlignDataModule's preference collator adds; this batch has neither"
            )
        if batch.split not in self.tables:
            raise ValueError(
                f"no precomputed reference log-probs for the {batch.split!r} split: they are computed at the start "
                "of fit (train and val) and of validate (val), from the trainer's data module"
            )
        table = self.tables[batch.split][1]
        values = table[batch.index.to(table.device)]
        return torch.cat([values[:, 0], values[:, 1]]).to(batch.input_ids.device)

    def prepare(
        self,
        splits: Sequence[str],
        *,
        trainer,
        score: Scorer,
        policy: nn.Module,
        load: Loader,
        key_settings: dict[str, Any],
    ) -> None:
        """Fill the tables for ``splits`` of the trainer's data module: from the cache, or by one pass of the
        reference.

        Every rank must call this (it broadcasts and gathers). Splits already held under the same key are left as
        they are; a split without examples is skipped."""
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "split_examples"):
            raise ValueError(
                "reference: precomputed scores the examples of the trainer's data module: pass an AlignDataModule "
                "(datamodule=...) to fit or validate"
            )
        device = trainer.strategy.root_device
        missing = []
        for split in splits:
            examples = datamodule.split_examples(split)
            if not examples:
                continue
            key = cache_key(self.model_settings, str(trainer.precision), key_settings, split, examples)
            key = trainer.strategy.broadcast(key, src=0)  # one key, whatever the node
            if split in self.tables and self.tables[split][0] == key:
                continue
            path = self.cache_dir / f"ref_logps-{key}.safetensors"
            table = load_reference_logps(path, len(examples)) if trainer.is_global_zero else None
            table = trainer.strategy.broadcast(table, src=0)
            if table is None:
                missing.append((split, key, examples, path))
            else:
                rank_zero_info(f"reference log-probs [{split}]: reused {path}")
                self.tables[split] = (key, table.to(device))
        if not missing:
            return
        with self._scorer(trainer, score, policy, load) as score_batch:
            for split, key, examples, path in missing:
                start = time.perf_counter()
                table = _score_split(trainer, datamodule, examples, score_batch, sort_by_length=split == "train")
                if trainer.is_global_zero:
                    metadata = {"split": split, "key": key, "model": str(self.model_settings.name_or_path)}
                    save_reference_logps(path, table, metadata)
                trainer.strategy.barrier()
                seconds = time.perf_counter() - start
                rank_zero_info(
                    f"reference log-probs [{split}]: computed {len(examples)} in {seconds:.1f}s, wrote {path}"
                )
                self.tables[split] = (key, table.to(device))

    @contextmanager
    def _scorer(self, trainer, score: Scorer, policy: nn.Module, load: Loader) -> Iterator[Callable]:
        """A function from batch to reference log-probs ``[2n]`` for the duration of the pass: the policy with its
        adapter off, or the starting weights loaded as the policy was and deleted on exit."""
        if self.adapter_off:
            was_training = policy.training
            policy.eval()

            def score_adapter_off(batch: PreferenceBatch) -> torch.Tensor:
                with policy.disable_adapter():
                    return score(policy, batch)

            try:
                yield score_adapter_off
            finally:
                policy.train(was_training)
            return
        reference = load(self.model_settings.name_or_path)
        reference.requires_grad_(False)
        disable_dropout(reference)
        reference = trainer.precision_plugin.convert_module(reference)  # as the strategy converted the policy
        reference = reference.to(trainer.strategy.root_device).eval()

        def score_loaded(batch: PreferenceBatch) -> torch.Tensor:
            return score(reference, batch)

        try:
            yield score_loaded
        finally:
            reference = None  # the closure's cell: nothing holds the model any more
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _score_split(trainer, datamodule, examples: Sequence[dict], score: Callable, sort_by_length: bool) -> torch.Tensor:
    """This rank's share of ``examples`` scored, then gathered: the whole table ``[n, 2]`` on the CPU.

    Unsorted, the shares are exactly the validation loader's batches (``DistributedSampler`` without shuffling
    also deals ``rank::world_size``), so the values equal a live reference's bit for bit and validation at step 0
    shows rewards of exactly 0, as with ``copy``. Training batches are length-bucketed, so the training split is
    sorted by length instead, which cuts padding; its values then differ from a live reference's by float
    rounding (about 1e-7 relative)."""
    world, rank, n = trainer.world_size, trainer.global_rank, len(examples)
    per_rank = -(-n // world)
    share = list(range(rank, n, world))
    if sort_by_length:
        lengths = column(examples, "length")  # from Arrow without building every example
        share.sort(key=lambda i: lengths[i])  # similar lengths in a batch: less padding
    valid = len(share)
    share += [share[-1] if share else 0] * (per_rank - valid)  # repeats, so every rank runs as many forwards
    values = []
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        for batch in datamodule.examples_dataloader([examples[i] for i in share]):
            batch = move_data_to_device(batch, trainer.strategy.root_device)
            values.append(torch.stack(batch.pairs(score(batch)), dim=1).float())
    values = torch.cat(values)
    indices = torch.tensor(share[:valid] + [-1] * (per_rank - valid), device=values.device)
    if world > 1:
        values = trainer.strategy.all_gather(values).reshape(-1, 2)
        indices = trainer.strategy.all_gather(indices).reshape(-1)
    values, indices = values.cpu(), indices.cpu()
    keep = indices >= 0
    table = torch.full((n, 2), float("nan"))
    table[indices[keep]] = values[keep]
    if torch.isnan(table).any():
        raise RuntimeError("precomputing the reference log-probs left examples unscored")
    return table
