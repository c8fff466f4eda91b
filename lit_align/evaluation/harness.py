"""One call into lm-evaluation-harness with a model that is already in memory.

lm-eval's ``HFLM`` accepts a loaded model and tokenizer; handing it ours (instead of a path it would load again)
is what lets ``lit_align eval`` score a LoRA adapter unmerged, a Lightning checkpoint without an export, and the
policy in the middle of a training run without a second copy of its weights.

Two choices differ from lm-eval's command line. ``batch_size`` is an integer: lm-eval's ``auto`` probes the
largest batch on the first task and runs out of memory on a later one with longer inputs, and a batch size that
changes between runs changes padding and so the last digits of the scores. Every seed (Python, numpy, torch,
few-shot sampling) is the one ``seed``, so a run is repeated by repeating its config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lit_align.evaluation.tasks import default_include_path, task_manager, task_specs


@dataclass
class HarnessSettings:
    """What lm-eval runs and how; the keys are lm-eval's own option names."""

    tasks: list[str]
    """lm-eval task or group names (``hellaswag``, ``cmmlu``), or tasks defined in ``include_path``."""
    num_fewshot: int | None = None
    """Examples shown before each question; ``None`` keeps each task's default."""
    limit: int | float | None = None
    """At most this many examples per task (a float below 1: that fraction); ``None`` runs them all."""
    batch_size: int = 8
    """Requests per forward pass. An integer: ``auto`` is not offered (see the module docstring)."""
    max_length: int | None = None
    """Longest input in tokens; ``None`` takes the model config's maximum."""
    apply_chat_template: bool = False
    """Render each prompt with the tokenizer's chat template (chat and instruct models)."""
    fewshot_as_multiturn: bool = True
    """With the chat template, show few-shot examples as earlier user/assistant turns."""
    system_instruction: str | None = None
    """A system message (with the chat template) or text prepended to every prompt."""
    gen_kwargs: dict[str, Any] | None = None
    """Generation settings for generative tasks, over each task's own (``max_gen_toks``, ``temperature``)."""
    log_samples: bool = False
    """Keep every example's prompt, answer and score (written as ``samples_<task>.jsonl``)."""
    include_path: str | None = field(default_factory=default_include_path)
    """A folder of task YAMLs beside lm-eval's own; default: the project's ``configs/eval/tasks``."""
    data_files: dict[str, str] = field(default_factory=dict)
    """Per task, the local JSON Lines file it evaluates instead of the one its YAML names."""
    seed: int = 1234
    """Seed of Python's, numpy's and torch's generators and of few-shot sampling."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks: name at least one lm-eval task")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                f"batch_size must be a positive integer, got {self.batch_size!r} (lm-eval's 'auto' is not offered: "
                "it sizes the batch on the first task and can run out of memory on a later one)"
            )
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive or null, got {self.limit}")


def run_harness(model: nn.Module, tokenizer, settings: HarnessSettings) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` on ``model`` (a ``PreTrainedModel`` or a ``PeftModel``, on the device it
    should run on); returns lm-eval's result dictionary (``results``, ``configs``, ``n-samples``, ``samples``)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = task_manager(settings.tasks, settings.include_path)
    specs = task_specs(settings.tasks, settings.data_files, settings.include_path)
    with _quiet_in_memory_notice():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size, max_length=settings.max_length)
    return simple_evaluate(
        model=lm,
        tasks=specs,
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        log_samples=settings.log_samples,
        apply_chat_template=settings.apply_chat_template,
        fewshot_as_multiturn=settings.fewshot_as_multiturn and settings.apply_chat_template,
        system_instruction=settings.system_instruction,
        gen_kwargs=dict(settings.gen_kwargs) if settings.gen_kwargs else None,
        task_manager=manager,
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )


class _DropInMemoryNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("model kwarg is not of type `str`" in message or "already-initialized model" in message)


@contextmanager
def _quiet_in_memory_notice() -> Iterator[None]:
    """lm-eval warns that a model passed in memory ignores its loading options; here that is the point."""
    logger, notice = logging.getLogger("lm_eval.models.huggingface"), _DropInMemoryNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
