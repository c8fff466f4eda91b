"""GRPO: sample a group of completions per prompt, score them, and push up the better-than-the-group ones.

Each training step takes one batch of prompts and

1. samples ``num_generations`` completions of each with the current policy (`RolloutModule.sample`, or vLLM);
2. scores them with the reward functions and turns the rewards into group-relative advantages
   (`lit_align.losses.grpo.group_advantages`, ``scale_rewards``);
3. runs the policy over prompt + completion (`AlignModule.label_logps`: per-token log-probs, chunked head) and
   hands them, with the advantages, to the loss object (``loss:``, a `lit_align.losses.GRPOLoss`: clipped
   surrogate, optional KL to a reference, ``loss_type``'s token aggregation).

With ``num_iterations > 1`` the data module serves each batch that many times in a row (``data.batch_repeats``,
linked), and the module samples only the first time: later passes reuse the completions, their rewards and the
log-probs the policy gave them when they were sampled, so the importance ratio and its clipping are real. A run
resumed in the middle of such a block samples that batch afresh.

With ``accumulate_grad_batches > 1`` every micro-batch samples its own completions, and ``dapo`` divides by the
completion tokens of its micro-batch (over all ranks); Lightning then averages the micro-batches. TRL samples once
per accumulated batch and divides by all of its tokens: the two agree without accumulation.

Generation and scoring live here; the formulas live in `lit_align.losses.grpo`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from lit_align.checks import ConfigError, check_at_least, check_between
from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import PromptBatch, SequenceBatch
from lit_align.losses.grpo import GRPOLoss, RolloutLogps, ScaleRewards, group_advantages
from lit_align.models.generation_inputs import eos_token_ids
from lit_align.modules.reference import AdapterOffReference, CopyReference, Reference, resolve_reference_mode
from lit_align.modules.rollout import RolloutModule, rollout_metrics
from lit_align.rollouts.generation import Completions, completion_batch, prompt_rows
from lit_align.rollouts.rewards import RewardScores


@dataclass
class Rollout:
    """One batch's completions with everything the loss needs from the moment they were sampled."""

    sequences: SequenceBatch
    completions: Completions
    scores: RewardScores
    advantages: torch.Tensor
    zero_std: torch.Tensor
    mask: torch.Tensor
    """``[N, T - 1]`` the completion targets the loss uses (all of a truncated one's masked with
    ``mask_truncated_completions``)."""
    old_logps: torch.Tensor | None
    ref_logps: torch.Tensor | None
    metrics: dict
    uses: int = 0


class GRPOModule(RolloutModule):
    """Group Relative Policy Optimization on prompts with verifiable answers (TRL's ``GRPOTrainer`` options).

    Args:
        loss: A `lit_align.losses.GRPOLoss`: ``loss_type`` (``grpo``, ``bnpo``, ``dr_grpo``, ``dapo``), ``epsilon``,
            ``epsilon_high``, ``beta`` (KL weight; 0, the default, holds no reference). Default ``GRPOLoss()``.
        scale_rewards: Divide advantages by the group's reward std (``group``), the batch's (``batch``), or not
            (``none``, Dr. GRPO).
        num_iterations: Optimizer steps per sampled batch (μ in the GRPO paper).
        mask_truncated_completions: Leave completions that did not end within ``max_completion_length`` out of the
            loss (DAPO): a cut-off answer is neither right nor wrong.
        reference: With ``beta > 0``: ``adapter_off`` (the policy with its LoRA adapter switched off), ``copy`` (a
            frozen copy of the starting weights), or ``auto`` (``adapter_off`` with LoRA, else ``copy``).
        reference_model_name_or_path: Load the ``copy`` reference from elsewhere (e.g. the base model).
        use_vllm: Sample with a vLLM engine on the same GPU (``vllm_mode: colocate``); needs CUDA and the ``vllm``
            extra. Weights are pushed to the engine after every optimizer step (LoRA merged for it). Validation
            keeps using Hugging Face ``generate``.
        vllm_mode: Only ``colocate``.
        vllm_gpu_memory_utilization: Share of the GPU's memory vLLM may take.

    Every argument of `RolloutModule` (reward functions and weights, ``num_generations``, ``sampling``, ...) too.
    """

    def __init__(
        self,
        model_name_or_path: str,
        loss: GRPOLoss | None = None,
        scale_rewards: ScaleRewards = "group",
        num_iterations: int = 1,
        mask_truncated_completions: bool = False,
        reference: Literal["auto", "copy", "adapter_off"] = "auto",
        reference_model_name_or_path: str | None = None,
        use_vllm: bool = False,
        vllm_mode: Literal["colocate"] = "colocate",
        vllm_gpu_memory_utilization: float = 0.3,
        **kwargs,
    ) -> None:
        if scale_rewards not in ("group", "batch", "none"):
            raise ConfigError(f"model.init_args.scale_rewards must be group, batch or none, got {scale_rewards!r}")
        check_at_least("model.init_args.num_iterations", num_iterations, 1)
        if vllm_mode != "colocate":
            raise ConfigError(f"model.init_args.vllm_mode: only colocate is supported, got {vllm_mode!r}")
        check_between("model.init_args.vllm_gpu_memory_utilization", vllm_gpu_memory_utilization, 0, 1, low_open=True)
        if use_vllm:
            from lit_align.rollouts.vllm_colocate import check_vllm_available

            check_vllm_available()  # before the model loads: a CPU machine learns it at once
        super().__init__(model_name_or_path, **kwargs)
        if self.num_generations < 2:
            raise ConfigError(
                "model.init_args.num_generations must be at least 2 for GRPO: an advantage compares a completion "
                f"with the others of its group, got {self.num_generations}"
            )
        self.loss = loss if loss is not None else GRPOLoss()
        self.scale_rewards = scale_rewards
        self.num_iterations = num_iterations
        self.mask_truncated_completions = mask_truncated_completions
        self.use_vllm = use_vllm
        self.vllm_gpu_memory_utilization = vllm_gpu_memory_utilization
        self.reference = self._make_reference(reference, reference_model_name_or_path)
        self._rollouts: dict[tuple, Rollout] = {}
        self._vllm = None
        self._vllm_synced_step: int | None = None

    @property
    def batch_repeats(self) -> int:
        """How many times in a row the data module serves each training batch (linked to ``data.batch_repeats``)."""
        return self.num_iterations

    def _make_reference(self, mode: str, path: str | None) -> Reference | None:
        if self.loss.reference_free:
            if path is not None:
                raise ConfigError("model.init_args.reference_model_name_or_path needs a KL term: set loss beta > 0")
            return None
        resolved = resolve_reference_mode(mode, False, self.lora is not None)
        if path is not None and resolved != "copy":
            raise ConfigError("model.init_args.reference_model_name_or_path is only used with reference: copy")
        if resolved == "adapter_off":
            return AdapterOffReference()
        return CopyReference(path, must_reload=self.quantization is not None)

    def configure_base_model(self, model: torch.nn.Module) -> None:
        super().configure_base_model(model)
        if self.reference is not None:
            self.reference.setup(model, self.load_model)

    # ---- rollouts -----------------------------------------------------------------------------------------

    def token_logps(self, model: torch.nn.Module, sequences: SequenceBatch) -> torch.Tensor:
        """Per-target log-probs ``[N, T - 1]`` of ``sequences`` under ``model`` at the sampling temperature, the
        distribution the completions were drawn from (0 off the completion)."""
        return self.label_logps(model, sequences.model_inputs(), sequences.labels, temperature=self.temperature)[0]

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    def rollout(self, batch: PromptBatch) -> Rollout:
        """This batch's completions: sampled on its first pass, reused on the next ``num_iterations - 1``."""
        key = (batch.split, tuple(batch.index.tolist())) if batch.index is not None else None
        rollout = self._rollouts.get(key) if key is not None else None
        if rollout is None:
            rollout = self._new_rollout(batch)
            if key is not None and self.num_iterations > 1:
                self._rollouts = {k: v for k, v in self._rollouts.items() if v.uses > 0} | {key: rollout}
        else:
            batch.generation_time = 0.0
        rollout.uses += 1
        if key is not None and rollout.uses >= self.num_iterations:
            self._rollouts.pop(key, None)
        batch.completion_tokens = sum(rollout.completions.lengths)
        return rollout

    def _sample_for_training(self, batch: PromptBatch) -> tuple[Completions, float]:
        if self._vllm is None:
            return self.sample(batch, self.num_generations)
        start = time.perf_counter()
        ids = self._vllm.generate(prompt_rows(batch), self.num_generations, self.sampling)
        eos = set(eos_token_ids(self.policy, self.tokenizer))
        truncated = [not (row and row[-1] in eos) for row in ids]
        return Completions(ids, truncated, self.num_generations), time.perf_counter() - start

    def _new_rollout(self, batch: PromptBatch) -> Rollout:
        completions, seconds = self._sample_for_training(batch)
        batch.generation_time = seconds
        scores = self.score(self.rewards, batch, completions, self.decode(completions))
        gather = self.gathered if self.trainer.world_size > 1 else None
        advantages, zero_std = group_advantages(
            scores.total.to(self.device), self.num_generations, self.scale_rewards, gather=_flat(gather)
        )
        sequences = move_data_to_device(completion_batch(prompt_rows(batch), completions, self.pad_id), self.device)
        mask = (sequences.labels[:, 1:] != IGNORE_INDEX).float()
        if self.mask_truncated_completions:
            keep = ~torch.tensor(completions.truncated, device=self.device)
            mask = mask * keep.unsqueeze(1)
        old_logps = ref_logps = None
        if self.num_iterations > 1:
            with torch.no_grad():
                old_logps = self.token_logps(self.policy, sequences)
        if self.reference is not None:
            ref_logps = self.reference.logps(sequences, self.token_logps, self.policy)
        metrics = rollout_metrics(scores, zero_std, completions, self.gathered)
        return Rollout(sequences, completions, scores, advantages, zero_std, mask, old_logps, ref_logps, metrics)

    # ---- training -----------------------------------------------------------------------------------------

    def training_step(self, batch: PromptBatch, batch_idx: int) -> torch.Tensor | None:
        rollout = self.rollout(batch)
        sequences = rollout.sequences
        logps, _, entropy = self.label_logps(
            self.policy, sequences.model_inputs(), sequences.labels, entropy=True, temperature=self.temperature
        )
        self.loss.gather = _flat(self.gathered) if self.trainer.world_size > 1 else None
        inputs = RolloutLogps(
            logps=logps,
            mask=rollout.mask,
            advantages=rollout.advantages,
            max_completion_length=self.sampling.max_completion_length,
            old_logps=rollout.old_logps,
            ref_logps=rollout.ref_logps,
        )
        loss, loss_metrics = self.loss(inputs)
        totals = self.gathered(torch.stack([(entropy * rollout.mask).sum(), rollout.mask.sum()]).unsqueeze(0))
        metrics = {**rollout.metrics, **loss_metrics, "entropy": totals[:, 0].sum() / totals[:, 1].sum().clamp(min=1)}
        options = {"on_step": True, "on_epoch": False, "batch_size": batch.num_samples}
        self.log("train/loss", loss, prog_bar=True, **options)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, prog_bar=name == "reward", **options)
        self.log_learning_rate()
        return self.checked_loss(loss, batch_idx)

    # ---- vLLM ---------------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.use_vllm and self._vllm is None:
            from lit_align.rollouts.vllm_colocate import VLLMColocate

            datamodule = self.trainer.datamodule
            max_prompt = datamodule.settings.max_length if datamodule is not None else 1024
            self._vllm = VLLMColocate(
                self.model_name_or_path,
                max_model_len=max_prompt + self.sampling.max_completion_length,
                gpu_memory_utilization=self.vllm_gpu_memory_utilization,
                dtype=self.model_settings.dtype,
                seed=torch.initial_seed() % 2**31 + self.global_rank,
            )
            self._sync_vllm()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self._vllm is not None and self.global_step != self._vllm_synced_step:
            self._sync_vllm()

    def _sync_vllm(self) -> None:
        self._vllm.sync_weights(self.policy)
        self._vllm_synced_step = self.global_step


def _flat(gather):
    """A gather for 1-D tensors (the loss's convention) from `RolloutModule.gathered`."""
    if gather is None:
        return None
    return lambda values: gather(values).reshape(-1)
