"""``lit_align eval --dry_run true``: what an evaluation would run, with the first prompt of each task as the model
would see it, and nothing run.

The prompt is the part users get wrong and cannot see: a chat model scored without its template, a system
instruction that never arrives, a few-shot count that differs from the paper's. The plan builds each task's first
request with lm-eval's own code (few-shot examples, chat template, system instruction) from the tokenizer alone,
without loading the model's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lit_align.evaluation.harness import HarnessSettings
from lit_align.evaluation.model import EvalModel
from lit_align.evaluation.tasks import task_manager, task_specs


@dataclass
class TaskPreview:
    task: str
    num_fewshot: int
    examples: int | None
    """Examples the task has in its evaluated split (before ``limit``)."""
    prompt: str | None
    error: str | None = None


def plan_text(model: EvalModel, settings: HarnessSettings, previews: list[TaskPreview], output_dir: Path) -> str:
    lines = [
        f"model: {model.path}" + (f" + adapter {model.adapter}" if model.adapter else ""),
        f"  gguf_file: {model.gguf_file}" if model.gguf_file else None,
        f"  device: {model.resolved_device()}, dtype: {model.dtype or 'float32 on CPU, the saved dtype on GPU'}",
        f"tasks: {', '.join(settings.tasks)}",
        f"limit: {settings.limit if settings.limit is not None else 'none (every example)'}, batch_size: "
        f"{settings.batch_size}, seed: {settings.seed}",
        f"apply_chat_template: {settings.apply_chat_template}"
        + (f", system_instruction: {settings.system_instruction!r}" if settings.system_instruction else ""),
        f"gen_kwargs: {settings.gen_kwargs}" if settings.gen_kwargs else None,
        f"output_dir: {output_dir}",
    ]
    for preview in previews:
        header = f"\n== {preview.task}: {preview.num_fewshot}-shot"
        if preview.examples is not None:
            header += f", {preview.examples} examples"
        lines.append(header + " ==")
        lines.append(f"(cannot build its first prompt: {preview.error})" if preview.error else preview.prompt)
    lines.append("\ndry run: nothing was evaluated")
    return "\n".join(line for line in lines if line is not None)


def task_previews(settings: HarnessSettings, tokenizer) -> list[TaskPreview]:
    """Each task's first request, built as ``simple_evaluate`` builds it; a task that cannot load (a hub dataset
    offline and not cached) gets its error instead of stopping the plan."""
    manager = task_manager(settings.tasks, settings.include_path)
    specs = task_specs(settings.tasks, settings.data_files, settings.include_path)
    previews = []
    for spec in specs:
        name = spec if isinstance(spec, str) else spec["task"]
        try:
            loaded = manager.load([spec])["tasks"]
        except Exception as error:  # lm-eval and datasets raise many kinds; the plan reports any of them
            previews.append(TaskPreview(name, settings.num_fewshot or 0, None, None, _one_line(error)))
            continue
        for task_name, task in loaded.items():
            previews.append(_preview(task_name, task, settings, tokenizer))
    return previews


def _preview(name: str, task, settings: HarnessSettings, tokenizer) -> TaskPreview:
    # The same override rule as simple_evaluate: a task whose YAML says 0 shots keeps 0.
    shots = task.get_config("num_fewshot")
    if settings.num_fewshot is not None and shots != 0:
        shots = settings.num_fewshot
    task.set_config(key="num_fewshot", value=shots or 0)
    task.set_fewshot_seed(seed=settings.seed)
    docs = task.eval_docs
    try:
        task.build_all_requests(
            limit=1,
            system_instruction=settings.system_instruction,
            apply_chat_template=settings.apply_chat_template,
            fewshot_as_multiturn=settings.fewshot_as_multiturn and settings.apply_chat_template,
            chat_template=_chat_renderer(tokenizer),
        )
    except Exception as error:  # a template or doc_to_text that fails on the first document
        return TaskPreview(name, shots or 0, len(docs), None, _one_line(error))
    return TaskPreview(name, shots or 0, len(docs), task.instances[0].args[0])


def _chat_renderer(tokenizer):
    """What lm-eval's ``HFLM.apply_chat_template`` does, from the tokenizer alone."""

    def render(chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    return render


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
