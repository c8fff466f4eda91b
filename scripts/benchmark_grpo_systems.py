"""The two GRPO systems `benchmark_grpo.py` compares, each trained for a few steps in the calling process and
measured with `RolloutMeter`: lit_align's `GRPOModule` through the Lightning Trainer, and TRL 1.16's GRPOTrainer.

Both get the same model in float32, the same prompts (lit_align's data module reads them; TRL gets its records as
conversational messages and applies the chat template itself), ``P`` prompts x ``G`` completions per step sampled
with Hugging Face ``generate`` at temperature ``--temperature``, top-p 1, no top-k, ``max_completion_length``
tokens at most, the quickstart's reward functions and weights (answer 1.0, format 0.1), DAPO with beta 0 and
epsilon 0.2, one optimizer step per sampled batch, and the GRPO quickstart's AdamW arguments and gradient clipping
(``configs/quickstart/grpo.yaml``) with a constant learning rate. Dropout is off in both. TRL is told to use no
gradient checkpointing, no bf16, no logging or saving.

What a step is. lit_align: from ``on_train_batch_start`` to ``on_train_batch_end`` (sampling, rewards, the
training forward and backward, clipping, AdamW). TRL: from the start of ``training_step`` (whose input
preparation samples and scores) to ``on_step_end`` (after the optimizer step). Generation: lit_align's
``batch.generation_time`` (its `sample` call: ``generate`` in eval mode plus trimming at end-of-turn); TRL's
``model.generate`` call, timed by wrapping it. Completion tokens: each completion's tokens up to and including its
end-of-turn token, counted by each system (the two policies sample different completions, so they differ).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from measure import StepMeter, measure_fit

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "quickstart" / "grpo.yaml"
SYSTEMS = ("lit_align", "trl")
EPSILON = 0.2
REWARD_WEIGHTS = [1.0, 0.1]  # the quickstart's (GRPOModule's defaults): answer, format


class RolloutMeter(StepMeter):
    """`StepMeter`'s memory and set-up bookkeeping, with RL steps: each step's seconds, the seconds it spent in
    ``generate`` and the completion tokens it sampled (known only once it has sampled, hence `record`)."""

    def __init__(self, warmup: int) -> None:
        super().__init__(warmup)
        self.step_seconds: list[float] = []
        self.generation_seconds: list[float] = []
        self.step_tokens, self.step_generation = 0, 0.0

    def start(self, attention_mask=None) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()
            self.sampler.phase = "train"
        self.step_tokens, self.step_generation = 0, 0.0
        self._start = time.perf_counter()

    def record(self, completion_tokens: int = 0, generation_seconds: float = 0.0) -> None:
        self.step_tokens += completion_tokens
        self.step_generation += generation_seconds

    def stop(self) -> None:
        seconds = time.perf_counter() - self._start
        if self.steps >= self.warmup:
            self.step_seconds.append(seconds)
            self.generation_seconds.append(self.step_generation)
            self.seconds += seconds
            self.tokens += self.step_tokens
            self.timed += 1
        self.steps += 1

    def result(self) -> dict:
        row = super().result()
        for key in ("positions", "padding_fraction"):
            del row[key]
        row["completion_tokens"] = row.pop("tokens")
        row["completion_tokens_per_second"] = row.pop("tokens_per_second")
        row["step_seconds"], row["generation_seconds"] = self.step_seconds, self.generation_seconds
        if self.step_seconds:
            row["seconds_per_step"] = statistics.median(self.step_seconds)
            row["generation_seconds_per_step"] = statistics.median(self.generation_seconds)
        return row


@functools.cache
def recipe() -> tuple[dict, float | None]:
    """The GRPO quickstart's AdamW arguments (``lr``, ``weight_decay``, ``fused``) and gradient clipping norm."""
    import yaml

    config = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    optimizer = config["model"]["init_args"]["optimizer"]
    if optimizer["class_path"] != "torch.optim.AdamW":
        raise SystemExit(f"{RECIPE}: the benchmark gives both systems AdamW, the recipe has {optimizer['class_path']}")
    return optimizer.get("init_args", {}), config["trainer"].get("gradient_clip_val")


def prompt_data(args: argparse.Namespace):
    """lit_align's data module over ``args.data`` (task prompt): ``args.prompts_per_step`` prompts a batch."""
    from lit_align.data.datamodule import AlignDataModule, DataSource

    data = AlignDataModule(
        [DataSource(str(args.data))],
        tokenizer=args.model,
        task="prompt",
        max_length=64,  # the quickstart's data.max_length; the arithmetic prompts have about 20 tokens
        batch_size=args.prompts_per_step,
        seed=args.seed,
    )
    data.setup()
    return data


def run_system(name: str, args: argparse.Namespace) -> dict:
    """Train ``name`` for ``args.warmup + args.steps`` steps here; its measurements, or ``{"skipped": why}``."""
    import torch

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = {"lit_align": _run_lit_align, "trl": _run_trl}[name]
    workdir = Path(tempfile.mkdtemp(prefix="benchmark_grpo_"))
    try:
        row = runner(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"threads": torch.get_num_threads(), **row}


def _run_lit_align(args: argparse.Namespace, workdir: Path) -> dict:
    import torch
    from lightning.pytorch import Callback

    from lit_align.losses import GRPOLoss
    from lit_align.modules import GRPOModule
    from lit_align.optim import LRSchedule
    from lit_align.rollouts.sampling import SamplingSettings

    meter = RolloutMeter(args.warmup)

    class Meter(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            meter.start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            meter.record(batch.completion_tokens, batch.generation_time)
            meter.stop()

    module = GRPOModule(
        args.model,
        num_generations=args.num_generations,
        sampling=SamplingSettings(max_completion_length=args.max_completion_length, temperature=args.temperature),
        loss=GRPOLoss(loss_type="dapo", epsilon=EPSILON, beta=0.0),
        dtype="float32",
        optimizer=partial(torch.optim.AdamW, **recipe()[0]),
        lr_schedule=LRSchedule(kind="constant"),
    )
    settings = {"max_steps": args.warmup + args.steps, "gradient_clip_val": recipe()[1], "callbacks": [Meter()]}
    return measure_fit(module, prompt_data(args), meter, workdir, **settings)


def plain_texts(completions: list) -> list[str]:
    """TRL hands a conversational dataset's completions to reward functions as ``[{"role": "assistant", "content":
    text}]``; lit_align's reward functions take the text."""
    return [c[0]["content"] if isinstance(c, list) else c for c in completions]


def answer_reward(prompts, completions, ground_truth, **kwargs):
    from lit_align.rewards.reward_funcs import answer_reward as score

    return score(prompts, plain_texts(completions), ground_truth)


def format_reward(prompts, completions, **kwargs):
    from lit_align.rewards.reward_funcs import format_reward as score

    return score(prompts, plain_texts(completions))


def trl_config(workdir: Path, **settings):
    """A `GRPOConfig` for a CPU run in float32 without checkpointing, logging or saving, ``settings`` on top."""
    from trl import GRPOConfig

    adamw, clip = recipe()
    defaults = {
        "output_dir": str(workdir),
        "learning_rate": adamw["lr"],
        "weight_decay": adamw.get("weight_decay", 0.0),
        "optim": "adamw_torch_fused" if adamw.get("fused") else "adamw_torch",
        "lr_scheduler_type": "constant",
        "max_grad_norm": clip or 0.0,
        "gradient_accumulation_steps": 1,
        "gradient_checkpointing": False,
        "disable_dropout": True,
        "bf16": False,
        "use_cpu": True,
        "model_init_kwargs": {"dtype": "float32"},
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 10**6,
        "disable_tqdm": True,
    }
    return GRPOConfig(**{**defaults, **settings})


def _run_trl(args: argparse.Namespace, workdir: Path) -> dict:
    try:
        from trl import GRPOTrainer
    except ImportError:
        return {"skipped": "pip install '.[bench]'"}
    import datasets
    from transformers import AutoTokenizer, TrainerCallback

    records = prompt_data(args).train_data.records
    prompts = [{"prompt": record["prompt"], "ground_truth": record["ground_truth"]} for record in records]
    meter, checks = RolloutMeter(args.warmup), []

    class Meter(TrainerCallback):
        def on_step_end(self, *args, **kwargs) -> None:
            meter.stop()

    class MeteredGRPOTrainer(GRPOTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            meter.start()
            return super().training_step(model, inputs, *rest, **kwargs)

        def _prepare_inputs(self, generation_batch):
            inputs = super()._prepare_inputs(generation_batch)
            if self.model.training:
                meter.record(completion_tokens=int(inputs["completion_mask"].sum()))
                checks.append(same_prompt_tokens(generation_batch, inputs, self.processing_class))
            return inputs

    config = trl_config(
        workdir,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=args.temperature,
        loss_type="dapo",
        beta=0.0,
        epsilon=EPSILON,
        num_iterations=1,
        scale_rewards="group",
        reward_weights=REWARD_WEIGHTS,
        max_steps=args.warmup + args.steps,
        seed=args.seed,
    )
    meter.begin()
    trainer = MeteredGRPOTrainer(
        model=str(args.model),
        reward_funcs=[answer_reward, format_reward],
        args=config,
        train_dataset=datasets.Dataset.from_list(prompts),
        processing_class=AutoTokenizer.from_pretrained(args.model),
        callbacks=[Meter()],
    )
    if trainer.model.is_gradient_checkpointing:
        raise SystemExit("TRL's model has gradient checkpointing on although the config turns it off")
    _time_generate(trainer.model, meter)
    trainer.train()
    row = meter.result()
    if not any(row["generation_seconds"]):
        raise SystemExit("TRL never called the wrapped model.generate: its generation time was not measured")
    return {**row, "steps_with_lit_align_prompt_tokens": sum(checks), "steps_checked": len(checks)}


def same_prompt_tokens(examples: list[dict], inputs: dict, tokenizer) -> bool:
    """Whether the prompt tokens TRL generated from (its rows are shuffled) are those lit_align's data module makes
    of the same records: the same chat template with the generation prompt, the same special tokens."""
    from lit_align.data.tokenize import tokenize_prompt

    rows = zip(inputs["prompt_ids"], inputs["prompt_mask"], strict=True)
    theirs = sorted(tuple(ids[mask.bool()].tolist()) for ids, mask in rows)
    return theirs == sorted(tuple(tokenize_prompt(tokenizer, example["prompt"])) for example in examples)


def _time_generate(model, meter: RolloutMeter) -> None:
    """Wrap ``model.generate`` (TRL samples through it on one process) so each call's seconds reach ``meter``."""
    generate = model.generate

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            meter.record(generation_seconds=time.perf_counter() - start)

    model.generate = timed
