"""``LMEval``: benchmark scores while the model trains, without exporting it first.

A preference loss that keeps falling says nothing about whether the model still answers the questions it could
answer before training; a benchmark does. Exporting checkpoints and scoring them afterwards finds a regression
hours late. This callback hands the policy being trained, in place (a LoRA ``PeftModel`` unmerged, no second
copy of the weights), to lm-evaluation-harness at the end of every validation and every ``every_n_steps``
optimizer steps, logs the scores next to the loss curves (``eval/<task>/<metric>``) and writes lm-eval's full
result to ``<run dir>/lm_eval/step_<N>/``.

What it costs: every call scores ``limit`` examples of every task on rank zero while the other ranks wait at
their next collective, so ``limit`` (50 by default) is what keeps it affordable; the scores of a 50-example
sample move by several points from noise alone (``results.json`` holds the standard errors).

What it restores: the random state of torch, ``random`` and numpy (lm-eval reseeds all of them), every module's
train/eval mode, and the level of lm-eval's logger, so a run with this callback trains exactly as one without.
Under sharded strategies (FSDP, FSDP2, DeepSpeed stage 3) no rank holds the whole model, so it switches itself
off there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

import lit_align
from lit_align.callbacks.policy_probe import PolicyProbe, policy_in_eval_mode
from lit_align.evaluation.harness import HarnessSettings, run_harness
from lit_align.evaluation.results import scalar_metrics, write_results
from lit_align.evaluation.tasks import task_manager, task_specs


class LMEval(PolicyProbe):
    """Run lm-eval ``tasks`` on the policy at the end of every validation and every ``every_n_steps`` optimizer
    steps (never twice at one step); log ``eval/<task>/<metric>[/<filter>]`` to every logger at
    ``trainer.global_step`` and write ``<log_dir>/lm_eval/step_<N>/results.json`` (and ``results.csv``).

    Only one ``LMEval`` runs per trainer: with several, the last in ``trainer.callbacks`` evaluates (name all
    tasks in one). A validation before training (``validate_before_training: true``) gives the step-0 scores.

    Args:
        tasks: lm-eval task or group names, or tasks defined in ``include_path`` (``demo_choice``).
        every_n_steps: Also evaluate every N optimizer steps; 0: only at the end of validation.
        after_validation: Evaluate at the end of every validation (the sanity check excluded).
        limit: At most this many examples per task (a float below 1: that fraction); ``null`` runs them all.
        num_fewshot: Examples shown before each question; ``null`` keeps each task's default.
        batch_size: Requests per forward pass.
        max_length: Longest input in tokens; ``null`` takes the model config's maximum.
        apply_chat_template: Render prompts with the tokenizer's chat template (chat and instruct models).
        system_instruction: A system message (with the chat template) or text prepended to every prompt.
        gen_kwargs: Generation settings for generative tasks (``max_gen_toks``, ``temperature``).
        include_path: A folder of task YAMLs beside lm-eval's own; ``null``: the project's ``configs/eval/tasks``.
        data_files: Per task, the local JSON Lines file it evaluates instead of the one its YAML names.
        seed: Seed of lm-eval's few-shot sampling and of the generators it sets (restored afterwards).
        log_samples: Also write every example's prompt, answer and score (``samples_<task>.jsonl``).
    """

    def __init__(
        self,
        tasks: list[str],
        every_n_steps: int = 0,
        after_validation: bool = True,
        limit: int | float | None = 50,
        num_fewshot: int | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        apply_chat_template: bool = False,
        system_instruction: str | None = None,
        gen_kwargs: dict[str, Any] | None = None,
        include_path: str | None = None,
        data_files: dict[str, str] | None = None,
        seed: int = 1234,
        log_samples: bool = False,
    ) -> None:
        super().__init__(every_n_steps, after_validation)
        optional = {"include_path": include_path} if include_path is not None else {}
        self.settings = HarnessSettings(
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            batch_size=batch_size,
            max_length=max_length,
            apply_chat_template=apply_chat_template,
            system_instruction=system_instruction,
            gen_kwargs=dict(gen_kwargs) if gen_kwargs else None,
            log_samples=log_samples,
            data_files=dict(data_files or {}),
            seed=seed,
            **optional,
        )

    @override
    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> bool:
        # Every rank checks, so a task-name typo or a missing data file stops all of them before the first step
        # rather than rank zero alone at the first validation (indexing lm-eval's own tasks: ~10 s, once).
        task_manager(self.settings.tasks, self.settings.include_path)
        task_specs(self.settings.tasks, self.settings.data_files, self.settings.include_path)
        return True

    # ---- work ---------------------------------------------------------------------------------------------

    @override
    def probe(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        results = self.evaluate(pl_module, trainer)
        metrics = scalar_metrics(results)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()
        write_results(self._log_dir / "lm_eval" / f"step_{step}", results, self._manifest(step))
        summary = ", ".join(f"{name.removeprefix('eval/')} {value:.4f}" for name, value in metrics.items())
        rank_zero_info(f"LMEval at step {step}: {summary}")

    def evaluate(self, pl_module: LightningModule, trainer: Trainer | None = None) -> dict[str, Any]:
        """lm-eval's result dictionary for ``pl_module.policy`` in eval mode, without gradients, under the
        trainer's validation precision. The policy's modules get their train/eval modes back afterwards."""
        with policy_in_eval_mode(pl_module.policy, trainer), _quiet_lm_eval():
            return run_harness(pl_module.policy, pl_module.tokenizer, self.settings)

    def _manifest(self, step: int) -> dict[str, Any]:
        """What was evaluated, in the shape ``lit_align eval`` writes (``name`` labels the run in plots)."""
        run = self._log_dir
        return {
            "name": f"{run.parent.name}-{run.name}" if run.name.startswith("version_") else run.name,
            "global_step": step,
            "tasks": list(self.settings.tasks),
            "limit": self.settings.limit,
            "num_fewshot": self.settings.num_fewshot,
            "versions": {"lit_align": lit_align.__version__, "lm_eval": version("lm_eval")},
        }


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval reports every task it builds at INFO; in the middle of a training console that drowns the progress
    bar. Its warnings still show."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(level)
