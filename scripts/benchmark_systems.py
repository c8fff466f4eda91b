"""The training systems `benchmark.py` compares, each run for a few steps in the calling process and measured with
`measure.StepMeter`: lit_align DPO and SFT through the Lightning Trainer, TRL's DPOTrainer, and a bare PyTorch loop.

Every system trains the same model in float32 on the same cleaned pairs (lit_align's data module reads and cleans
them; TRL gets the cleaned records as conversational messages and tokenises them itself), with the DPO quickstart
recipe's AdamW arguments and gradient clipping (``configs/quickstart/dpo.yaml``), a constant learning rate (a
schedule changes nothing in a step's cost), DPO sigmoid with beta 0.1 and dropout off. The bare loop calls
lit_align's own log-prob function (`lit_align.models.label_logps.label_token_logps`) on lit_align's own batches, so
the gap between it and ``lit_align-padded`` is framework overhead (Lightning, logging, the module's checks), not
different math.
"""

from __future__ import annotations

import argparse
import copy
import functools
import inspect
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from measure import StepMeter, measure_fit

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "quickstart" / "dpo.yaml"
BETA = 0.1


@dataclass(frozen=True)
class System:
    kind: str
    """``lit_align``, ``trl`` or ``bare``."""
    task: str = "dpo"
    packing: bool = False
    reference: str = "copy"
    lora: bool = False


SYSTEMS = {
    "lit_align-padded": System("lit_align"),
    "lit_align-packed": System("lit_align", packing=True),
    "lit_align-packed-adapter_off": System("lit_align", packing=True, reference="adapter_off", lora=True),
    "lit_align-packed-precomputed": System("lit_align", packing=True, reference="precomputed"),
    "sft-packed": System("lit_align", task="sft", packing=True),
    "trl": System("trl"),
    "bare": System("bare"),
}


def has_packing() -> bool:
    from lit_align.data.datamodule import AlignDataModule

    return "packing" in inspect.signature(AlignDataModule.__init__).parameters


def data_module(args: argparse.Namespace, task: str = "preference", packing: bool = False):
    """lit_align's data module over ``args.data`` (format auto). Every example is kept, however long: the HH-RLHF
    sample has about 21% of its pairs over 512 tokens, more than the default ``max_truncated_fraction``."""
    from lit_align.data.datamodule import AlignDataModule, DataSource

    data = AlignDataModule(
        [DataSource(str(args.data))],
        tokenizer=args.model,
        task=task,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_truncated_fraction=1.0,
        seed=args.seed,
        **({"packing": True} if packing else {}),
    )
    data.setup()
    return data


def run_system(name: str, args: argparse.Namespace) -> dict:
    """Train ``name`` for ``args.warmup + args.steps`` steps here; its measurements, or ``{"skipped": why}``."""
    import torch

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    system = SYSTEMS[name]
    runner = {"lit_align": _run_lit_align, "trl": _run_trl, "bare": _run_bare}[system.kind]
    workdir = Path(tempfile.mkdtemp(prefix="benchmark_"))
    try:
        row = runner(system, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"threads": torch.get_num_threads(), **row}


@functools.cache
def recipe() -> tuple[dict, float | None]:
    """The DPO quickstart's AdamW arguments (``lr``, ``weight_decay``, ``fused``, ...) and gradient clipping norm."""
    import yaml

    config = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    optimizer = config["model"]["init_args"]["optimizer"]
    if optimizer["class_path"] != "torch.optim.AdamW":
        raise SystemExit(f"{RECIPE}: the benchmark gives TRL and the bare loop AdamW, the recipe has {optimizer}")
    return optimizer.get("init_args", {}), config["trainer"].get("gradient_clip_val")


def _adamw():
    import torch

    return partial(torch.optim.AdamW, **recipe()[0])


def _run_lit_align(system: System, args: argparse.Namespace, workdir: Path) -> dict:
    from lit_align.losses import DPOLoss
    from lit_align.models import LoraSettings
    from lit_align.modules import PreferenceModule, SFTModule
    from lit_align.optim import LRSchedule

    if system.packing and not has_packing():
        return {"skipped": "this lit_align has no data.packing"}
    lora = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules="all-linear") if system.lora else None
    common = {"dtype": "float32", "lora": lora, "optimizer": _adamw(), "lr_schedule": LRSchedule(kind="constant")}
    if system.task == "sft":
        module = SFTModule(args.model, **common)
    else:
        cache = {"reference_cache_dir": str(workdir / "cache")} if system.reference == "precomputed" else {}
        module = PreferenceModule(args.model, loss=DPOLoss(beta=BETA), reference=system.reference, **cache, **common)
    data = data_module(args, "sft" if system.task == "sft" else "preference", system.packing)
    if lora is not None:
        import peft  # noqa: F401  (imported inside fit otherwise, and its import would count as training memory)
    steps = args.warmup + args.steps
    meter = StepMeter(args.warmup)
    return measure_fit(module, data, meter, workdir, max_steps=steps, gradient_clip_val=recipe()[1])


def _run_bare(system: System, args: argparse.Namespace, workdir: Path) -> dict:
    """lit_align's batches, in the order its data module serves them, through a loop with no framework: policy and
    frozen reference forward, the DPO sigmoid loss, backward, clipping, AdamW step, zero_grad."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from lit_align.models.label_logps import label_token_logps

    loader = data_module(args).train_dataloader()
    meter = StepMeter(args.warmup)
    meter.begin()
    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    policy.config.use_cache = False
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    policy.train()
    optimizer = _adamw()(policy.parameters())
    for _, batch in zip(range(args.warmup + args.steps), loader, strict=False):
        meter.start(batch.attention_mask)
        inputs = batch.model_inputs()
        logps, _ = label_token_logps(policy, batch.labels, inputs)
        with torch.no_grad():
            reference_logps, _ = label_token_logps(reference, batch.labels, inputs)
        policy_chosen, policy_rejected = batch.pairs(batch.sequence_sums(logps))
        reference_chosen, reference_rejected = batch.pairs(batch.sequence_sums(reference_logps))
        margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
        loss = -F.logsigmoid(BETA * margin).mean()
        loss.backward()
        if recipe()[1]:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), recipe()[1])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        meter.stop()
    if meter.steps < args.warmup + args.steps:
        raise SystemExit(f"{args.data} has {meter.steps} batches of {args.batch_size} pairs: fewer than the steps")
    return meter.result()


def _run_trl(system: System, args: argparse.Namespace, workdir: Path) -> dict:
    """TRL's DPOTrainer on lit_align's cleaned pairs as conversational messages, truncated ``keep_end`` (the end
    of a long prompt kept, as lit_align keeps it). A step is timed from the start of ``training_step`` to
    ``on_step_end`` (after the optimizer step and zero_grad)."""
    try:
        from trl import DPOConfig, DPOTrainer
    except ImportError:
        return {"skipped": "pip install '.[bench]'"}
    import datasets
    from transformers import AutoTokenizer, TrainerCallback

    data = data_module(args)
    pairs = [{key: record[key] for key in ("prompt", "chosen", "rejected")} for record in data.train_data.records]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    meter = StepMeter(args.warmup)

    class Meter(TrainerCallback):
        def on_step_end(self, *args, **kwargs) -> None:
            meter.stop()

    class MeteredDPOTrainer(DPOTrainer):
        def training_step(self, model, inputs, *rest, **kwargs):
            meter.start(inputs["attention_mask"])
            return super().training_step(model, inputs, *rest, **kwargs)

    adamw, clip = recipe()
    config = DPOConfig(
        output_dir=str(workdir),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=adamw["lr"],
        weight_decay=adamw.get("weight_decay", 0.01),
        optim="adamw_torch_fused" if adamw.get("fused") else "adamw_torch",
        lr_scheduler_type="constant",
        max_grad_norm=clip or 0.0,
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=args.max_length,
        truncation_mode="keep_end",
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        model_init_kwargs={"dtype": "float32"},
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        disable_tqdm=True,
        seed=args.seed,
    )
    meter.begin()
    trainer = MeteredDPOTrainer(
        model=str(args.model),
        args=config,
        train_dataset=datasets.Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=[Meter()],
    )
    trainer.train()
    row = meter.result()
    return {**row, "token_match": token_match(trainer.train_dataset, data.train_data.examples, args.max_length)}


def token_match(trl_rows, examples: list[dict], max_length: int) -> dict:
    """How TRL's tokenisation of the pairs compares with lit_align's, pair by pair (same order): pairs whose
    chosen and rejected token ids (after ``keep_end`` truncation) are identical, whose completion tokens (lit_align's
    labels, TRL's completion mask) are identical too, and whose sequence lengths agree."""
    counts = {"pairs": 0, "same_ids": 0, "same_ids_and_completion": 0, "same_lengths": 0}
    for row, example in zip(trl_rows, examples, strict=True):
        same_ids = same_completion = same_lengths = True
        for side in ("chosen", "rejected"):
            prompt, completion = row["prompt_ids"], row[f"{side}_ids"]
            ids = (prompt + completion)[-max_length:]
            is_completion = ([False] * len(prompt) + [True] * len(completion))[-max_length:]
            ours = example[f"{side}_input_ids"]
            our_completion = [label != -100 for label in example[f"{side}_labels"]]
            same_ids &= ids == ours
            same_completion &= is_completion == our_completion
            same_lengths &= len(ids) == len(ours)
        counts["pairs"] += 1
        counts["same_ids"] += same_ids
        counts["same_ids_and_completion"] += same_ids and same_completion
        counts["same_lengths"] += same_lengths
    return counts
