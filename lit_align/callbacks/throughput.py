"""``TokenThroughput``: how fast a run learns from real tokens, and what it costs in memory.

Everything is logged once per optimizer step, at the gradient-accumulation boundary, for the whole step:
tokens and samples are summed over its micro-batches and, under DDP, over ranks, so ``perf/tokens_per_sec``
is the speed of the whole job. The step time runs from the start of the step's first micro-batch to the end
of its last one on a monotonic clock; validation, and callbacks that run between steps (generation), fall
outside it. Counting reads the attention mask with ``.item()``, which waits for the step's device work, so
on a GPU the clock measures compute, not kernel launches.

Metrics go through ``pl_module.log(on_step=True, on_epoch=False)`` from ``on_train_batch_end``: Lightning
writes step metrics to the loggers right after that hook, and only at accumulation boundaries
(``update_train_step_metrics`` returns early while accumulating), at the same step as ``train/loss``,
obeying ``log_every_n_steps`` and reaching every logger and the progress bar. ``trainer.logger.log_metrics``
would bypass ``log_every_n_steps`` and the progress bar, and pick its own step numbering.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lit_align.callbacks.throughput_math import (
    count_tokens,
    grad_l2_norm,
    padding_share,
    peak_memory_bytes,
    rate,
)


class TokenThroughput(Callback):
    """Logs ``perf/tokens_per_sec`` (real tokens, also in the progress bar), ``perf/samples_per_sec`` (a
    preference pair counts as one sample), ``perf/padding_fraction``, ``perf/tokens_seen`` (cumulative, kept in
    checkpoints), ``perf/step_time`` (seconds per optimizer step), ``perf/grad_norm`` and ``perf/peak_memory_mb``.

    For RL batches (prompts whose completions the module samples: GRPO), tokens are the prompts' plus the sampled
    completions', ``perf/generation_time`` is the step's seconds spent sampling (inside ``perf/step_time``), and
    no padding fraction is logged (the batch's padding is not what the model ran on).

    Args:
        grad_norm: Log the global L2 norm of the gradients before clipping.
        peak_memory: Log peak memory in MiB: CUDA's maximum allocated on a GPU, the process's peak resident set
            size on CPU.
    """

    def __init__(self, grad_norm: bool = True, peak_memory: bool = True) -> None:
        self.log_grad_norm = grad_norm
        self.log_peak_memory = peak_memory
        self.tokens_seen = 0
        self._clock = time.perf_counter  # tests script it
        self._last_global_step: int | None = None
        self._warned_no_mask = False
        self._start_step()

    def _start_step(self) -> None:
        self._step_start: float | None = None
        self._tokens = 0
        self._positions = 0
        self._samples = 0
        self._generation_time: float | None = None

    # ---- hooks --------------------------------------------------------------------------------------------

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_step()
        self._last_global_step = trainer.global_step

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._step_start is None:
            self._step_start = self._clock()

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._count(batch)
        if trainer.global_step == self._last_global_step:
            return  # mid-accumulation: the optimizer has not stepped yet
        self._last_global_step = trainer.global_step
        seconds = self._clock() - self._step_start
        tokens, positions, samples = self._sum_over_ranks(trainer, pl_module)
        metrics = {"perf/step_time": seconds}
        if positions > 0:
            self.tokens_seen += tokens
            metrics["perf/tokens_per_sec"] = rate(tokens, seconds)
            metrics["perf/samples_per_sec"] = rate(samples, seconds)
            if self._generation_time is None:
                metrics["perf/padding_fraction"] = padding_share(tokens, positions)
            metrics["perf/tokens_seen"] = float(self.tokens_seen)
        if self._generation_time is not None:
            metrics["perf/generation_time"] = self._generation_time
        if self.log_peak_memory and (peak := peak_memory_bytes(pl_module.device)) is not None:
            metrics["perf/peak_memory_mb"] = peak / 2**20
        for name, value in metrics.items():
            pl_module.log(name, value, on_step=True, on_epoch=False, prog_bar=name == "perf/tokens_per_sec")
        self._start_step()

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning 2.6 runs this hook before clipping: Precision._after_closure calls on_before_optimizer_step,
        # then _clip_gradients (lightning/pytorch/plugins/precision/precision.py), and the AMP and FSDP plugins
        # unscale the gradients before _after_closure. So this is the raw norm that gradient_clip_val acts on.
        if not self.log_grad_norm:
            return
        norm = grad_l2_norm(pl_module.parameters())
        if norm is None:
            return
        if isinstance(trainer.strategy, FSDPStrategy):  # each rank holds a shard of every gradient
            norm = trainer.strategy.reduce(norm.square(), reduce_op="sum").sqrt()
        pl_module.log("perf/grad_norm", norm, on_step=True, on_epoch=False)

    # ---- state --------------------------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"tokens_seen": self.tokens_seen}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tokens_seen = int(state_dict.get("tokens_seen", 0))

    # ---- helpers ------------------------------------------------------------------------------------------

    def _count(self, batch: Any) -> None:
        mask = getattr(batch, "attention_mask", None)
        if mask is None:
            if not self._warned_no_mask:
                rank_zero_warn("TokenThroughput: batches have no `attention_mask`; token counts are not logged")
                self._warned_no_mask = True
            return
        generated = getattr(batch, "completion_tokens", None)  # set by the module once it has sampled (GRPO)
        self._tokens += count_tokens(mask) + (generated or 0)
        self._positions += mask.numel() + (generated or 0)
        self._samples += getattr(batch, "num_samples", mask.shape[0])  # pairs, for a preference batch
        if generated is not None:
            self._generation_time = (self._generation_time or 0.0) + getattr(batch, "generation_time", 0.0)

    def _sum_over_ranks(self, trainer: Trainer, pl_module: LightningModule) -> tuple[int, int, int]:
        counts = [self._tokens, self._positions, self._samples]
        if trainer.world_size > 1:
            totals = trainer.strategy.reduce(torch.tensor(counts, device=pl_module.device), reduce_op="sum")
            counts = [int(v) for v in totals.tolist()]
        return counts[0], counts[1], counts[2]
