"""What GRPO and expert iteration share: prompts in, sampled completions scored by reward functions, and a
validation that measures answers rather than a loss.

Both train on prompt-only data with a verifiable answer (``data.task: prompt``, linked by the CLI). The policy
samples completions with Hugging Face ``generate`` (`lit_align.rollouts.generation`), and the recipe's reward
functions (`lit_align.rollouts.rewards`, import paths in ``reward_funcs``) score them. Validation samples answers
to the held-out prompts and logs ``val/reward`` and ``val/rewards/<name>/mean`` (sampled, as in training), and
``val/accuracy``: the ``accuracy_reward`` of one greedy answer per prompt, the number to checkpoint and stop on,
since an RL loss says little about progress (GRPO's sits near 0 by design).

Validation samples under its own seeded random stream (the same at every validation, so two validations differ
by the weights alone), and leaves the training stream as it found it.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from lit_align.checks import ConfigError, check_at_least
from lit_align.data.batch import PromptBatch
from lit_align.losses.grpo import nanstd
from lit_align.models.eval_mode import policy_in_eval_mode
from lit_align.models.generation_inputs import eos_token_ids
from lit_align.models.loading import disable_dropout
from lit_align.modules.base import AlignModule
from lit_align.rollouts.generation import Completions, generate_completions
from lit_align.rollouts.rewards import RewardFunctions, RewardScores
from lit_align.rollouts.sampling import SamplingSettings
from lit_align.strategies import sharded

ANSWER_REWARD = "lit_align.rewards.reward_funcs.answer_reward"
FORMAT_REWARD = "lit_align.rewards.reward_funcs.format_reward"
DEFAULT_REWARD_FUNCS = (ANSWER_REWARD, FORMAT_REWARD)
DEFAULT_REWARD_WEIGHTS = (1.0, 0.1)
"""A right answer pays 1, the ``<think>``/``<answer>`` layout 0.1: format alone never pays as much as being right,
the reward hacking where format reward and length rise while accuracy falls to 0."""
VALIDATION_SEED = 20240101


class RolloutModule(AlignModule):
    """Base of the modules that learn from their own sampled completions.

    Args:
        reward_funcs: Import paths of reward functions ``f(prompts, completions, **fields) -> list[float | None]``
            (see `lit_align.rewards.reward_funcs`); default: the answer reward and the format reward.
        reward_weights: One weight per function; default ``[1.0, 0.1]`` with the default functions, else 1 each.
            The reward is the weighted sum over the functions that did not return ``None``.
        num_generations: Completions sampled per prompt (GRPO's group size; expert iteration's ``k``).
        sampling: ``max_completion_length``, ``temperature``, ``top_p``, ``top_k`` of the sampled completions.
        num_generations_eval: Sampled completions per validation prompt (default ``num_generations``).
        accuracy_reward: Import path of the function behind ``val/accuracy`` (one greedy answer per prompt), and
            the one expert iteration keeps completions by; default the answer reward.
        disable_dropout: Turn dropout off in the policy (and reference), as TRL does: a completion's log-prob then
            means the same thing when it is sampled and when it is trained on.
    """

    data_task = "prompt"

    def __init__(
        self,
        model_name_or_path: str,
        reward_funcs: list[str] | None = None,
        reward_weights: list[float] | None = None,
        num_generations: int = 8,
        sampling: SamplingSettings | None = None,
        num_generations_eval: int | None = None,
        accuracy_reward: str = ANSWER_REWARD,
        disable_dropout: bool = True,
        **kwargs,
    ) -> None:
        check_at_least("model.init_args.num_generations", num_generations, 1)
        check_at_least("model.init_args.num_generations_eval", num_generations_eval, 1)
        if reward_weights is None and reward_funcs is None:
            reward_weights = list(DEFAULT_REWARD_WEIGHTS)
        # Import the functions before any model loads: a typo in a path stops the run at once.
        self.rewards = RewardFunctions(list(reward_funcs or DEFAULT_REWARD_FUNCS), reward_weights)
        self.accuracy = RewardFunctions([accuracy_reward], setting="model.init_args.accuracy_reward")
        super().__init__(model_name_or_path, **kwargs)
        self.num_generations = num_generations
        self.num_generations_eval = num_generations_eval or num_generations
        self.sampling = sampling or SamplingSettings()
        self.disable_dropout = disable_dropout
        self._val_sums: dict[str, torch.Tensor] = {}

    # ---- models -------------------------------------------------------------------------------------------

    def configure_base_model(self, model: torch.nn.Module) -> None:
        if self.disable_dropout:
            disable_dropout(model)

    def configure_model(self) -> None:
        super().configure_model()
        if self.disable_dropout:
            disable_dropout(self.policy)  # LoRA adds dropout layers of its own

    def setup(self, stage: str) -> None:
        super().setup(stage)
        strategy = self.trainer.strategy if self._trainer is not None else None
        if sharded(strategy):
            raise ConfigError(
                f"{type(self).__name__} samples with the whole policy on every rank, which FSDP, FSDP2 and DeepSpeed "
                "ZeRO-3 do not hold: use configs/strategy/ddp.yaml (or single_device.yaml, or ZeRO-2) for RL runs"
            )

    # ---- sampling and scoring -----------------------------------------------------------------------------

    @property
    def pad_id(self) -> int:
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def sample(self, batch: PromptBatch, n: int, greedy: bool = False) -> tuple[Completions, float]:
        """``n`` completions per prompt of ``batch`` from the policy (eval mode, no gradients), and the seconds
        it took."""
        start = time.perf_counter()
        trainer = self.trainer if self._trainer is not None else None
        with policy_in_eval_mode(self.policy, trainer):
            completions = generate_completions(
                self.policy, batch, n, self.sampling, eos_token_ids(self.policy, self.tokenizer), self.pad_id, greedy
            )
        return completions, time.perf_counter() - start

    def decode(self, completions: Completions) -> list[str]:
        return self.tokenizer.batch_decode(completions.ids, skip_special_tokens=True)

    def score(self, functions: RewardFunctions, batch: PromptBatch, completions: Completions, texts: list[str]):
        """``functions`` on the completions, each completion seeing its prompt's messages, fields and source."""
        n = completions.group_size

        def per_completion(values: list) -> list:
            return [value for value in values for _ in range(n)]

        return functions.score(
            per_completion(batch.prompts),
            texts,
            per_completion(batch.fields),
            per_completion(batch.sources),
            completion_ids=completions.ids,
        )

    def gathered(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` ``[N, ...]`` from every rank, concatenated (itself on one process), on this module's device."""
        values = values.to(self.device)
        if self._trainer is None or self.trainer.world_size <= 1:
            return values
        gathered = self.all_gather(values)
        return gathered.reshape(-1, *values.shape[1:])

    # ---- validation ---------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_sums = defaultdict(lambda: torch.zeros(2, dtype=torch.float64))

    def validation_step(self, batch: PromptBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(VALIDATION_SEED + batch_idx)
            sampled, _ = self.sample(batch, self.num_generations_eval)
            greedy, _ = self.sample(batch, 1, greedy=True)
        stage = self.val_stage(dataloader_idx)
        scores = self.score(self.rewards, batch, sampled, self.decode(sampled))
        accuracy = self.score(self.accuracy, batch, greedy, self.decode(greedy))
        self._add(f"{stage}/reward", scores.total)
        for column, name in enumerate(scores.names):
            self._add(f"{stage}/rewards/{name}/mean", scores.per_func[:, column])
        self._add(f"{stage}/accuracy", accuracy.per_func[:, 0])
        self._add(f"{stage}/completions/mean_length", torch.tensor(sampled.lengths, dtype=torch.float32))

    def _add(self, key: str, values: torch.Tensor) -> None:
        """Sum and count of the scored (not NaN) values, for a mean over the whole validation set."""
        scored = values[~values.isnan()].double().cpu()
        self._val_sums[key] += torch.stack([scored.sum(), torch.tensor(float(scored.numel()))])

    def on_validation_epoch_end(self) -> None:
        for key, totals in sorted(self._val_sums.items()):
            if self._trainer is not None and self.trainer.world_size > 1:
                totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum").cpu()
            total, count = totals.tolist()
            if count > 0:
                self.log(key, total / count, prog_bar=key.endswith("/accuracy"), add_dataloader_idx=False)


def rollout_metrics(scores: RewardScores, zero_std: torch.Tensor, completions: Completions, gather) -> dict:
    """TRL's rollout metrics of one batch over every rank: rewards, their spread, completion lengths."""
    per_func = gather(scores.per_func)
    total = gather(scores.total)
    lengths = gather(torch.tensor(completions.lengths, dtype=torch.float32, device=total.device))
    truncated = gather(torch.tensor(completions.truncated, dtype=torch.bool, device=total.device))
    metrics = {
        "reward": torch.nanmean(total),
        "reward_std": nanstd(total),
        "frac_reward_zero_std": gather(zero_std.float()).mean(),
        "completions/mean_length": lengths.mean(),
        "completions/min_length": lengths.min(),
        "completions/max_length": lengths.max(),
        "completions/clipped_ratio": truncated.float().mean(),
        "rewards/unscorable": torch.isnan(total).float().sum(),
    }
    if (~truncated).any():
        metrics["completions/mean_terminated_length"] = lengths[~truncated].mean()
    for column, name in enumerate(scores.names):
        metrics[f"rewards/{name}/mean"] = torch.nanmean(per_func[:, column])
        metrics[f"rewards/{name}/std"] = nanstd(per_func[:, column])
    return metrics
