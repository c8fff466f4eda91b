"""The callbacks around RL training: TokenThroughput on prompt batches whose completions the module sampled, and
GenerationLogger scoring its generations with the module's reward functions."""

import json
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lit_align.callbacks import GenerationLogger, TokenThroughput
from lit_align.callbacks.generation import markdown_table, prompt_of_record
from lit_align.data.batch import PromptBatch, SequenceBatch
from lit_align.data.tokenize import tokenize_prompt
from lit_align.rollouts import RewardFunctions

from .test_generation import _text_events
from .test_throughput import RecordingLogger, _script_clock

# ---- TokenThroughput --------------------------------------------------------------------------------------------

SEVEN_OF_TEN = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])  # prompts padded on the left
THREE_OF_TEN = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]])


class SamplingModule(LightningModule):
    """Stands in for GRPO: "samples" ``completion_tokens`` tokens in ``generation_time`` seconds per micro-batch
    (scripted by batch index) and records them on the batch, as the real module does."""

    def __init__(self, completion_tokens: list[int], generation_time: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.completion_tokens = completion_tokens
        self.generation_time = generation_time

    def training_step(self, batch, batch_idx):
        if isinstance(batch, PromptBatch):
            batch.completion_tokens = self.completion_tokens[batch_idx]
            batch.generation_time = self.generation_time[batch_idx]
        loss = (self.weight * batch.attention_mask.sum() / 10).sum()
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _prompt_batch(mask: torch.Tensor) -> PromptBatch:
    rows = mask.shape[0]
    return PromptBatch(torch.zeros_like(mask), mask, [[]] * rows, [{}] * rows, ["hand"] * rows)


def _fit(callback, module, batches, max_steps, **trainer_args) -> RecordingLogger:
    logger = RecordingLogger()
    trainer = Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return logger


def test_rl_tokens_are_prompt_plus_completion_tokens():
    """Per step: 7 real prompt tokens + 13 sampled = 20 tokens in 4 s (5 tokens/s), 2 prompts (0.5 samples/s),
    of which 0.5 s generating; no padding fraction: the prompt batch's padding is not what the model ran on."""
    callback = TokenThroughput(peak_memory=False)
    _script_clock(callback, [4.0] * 3)
    module = SamplingModule(completion_tokens=[13] * 3, generation_time=[0.5] * 3)
    logger = _fit(callback, module, [_prompt_batch(SEVEN_OF_TEN)] * 3, max_steps=3)

    steps = [0, 1, 2]
    assert logger.series("perf/tokens_per_sec") == [(s, pytest.approx(20 / 4)) for s in steps]
    assert logger.series("perf/samples_per_sec") == [(s, pytest.approx(2 / 4)) for s in steps]
    assert logger.series("perf/generation_time") == [(s, pytest.approx(0.5)) for s in steps]
    assert logger.series("perf/step_time") == [(s, pytest.approx(4.0)) for s in steps]
    assert [v for _, v in logger.series("perf/tokens_seen")] == [20, 40, 60]
    assert logger.series("perf/padding_fraction") == []


def test_rl_accumulation_sums_tokens_and_generation_time_over_micro_batches():
    """Two micro-batches per step: (7 + 13) + (3 + 5) = 28 tokens in 7 s = 4 tokens/s; 0.5 + 0.25 = 0.75 s
    generating; 4 prompts in 7 s."""
    callback = TokenThroughput(peak_memory=False)
    _script_clock(callback, [7.0, 7.0])
    module = SamplingModule(completion_tokens=[13, 5] * 2, generation_time=[0.5, 0.25] * 2)
    batches = [_prompt_batch(SEVEN_OF_TEN), _prompt_batch(THREE_OF_TEN)] * 2
    logger = _fit(callback, module, batches, max_steps=2, accumulate_grad_batches=2)

    assert logger.series("perf/tokens_per_sec") == [(0, pytest.approx(4.0)), (1, pytest.approx(4.0))]
    assert logger.series("perf/generation_time") == [(0, pytest.approx(0.75)), (1, pytest.approx(0.75))]
    assert [v for _, v in logger.series("perf/samples_per_sec")] == [pytest.approx(4 / 7)] * 2
    assert logger.series("perf/padding_fraction") == []


def test_an_sft_batch_still_logs_padding_and_no_generation_time():
    """7 real tokens of 10 positions, 2 s a step: 3.5 tokens/s and a padding fraction of 3/10."""
    callback = TokenThroughput(peak_memory=False)
    _script_clock(callback, [2.0] * 2)
    batch = SequenceBatch(torch.zeros_like(SEVEN_OF_TEN), SEVEN_OF_TEN, torch.zeros_like(SEVEN_OF_TEN))
    logger = _fit(callback, SamplingModule([], []), [batch] * 2, max_steps=2)

    assert [v for _, v in logger.series("perf/tokens_per_sec")] == [pytest.approx(3.5)] * 2
    assert [v for _, v in logger.series("perf/padding_fraction")] == [pytest.approx(3 / 10)] * 2
    assert logger.series("perf/generation_time") == []


# ---- GenerationLogger -----------------------------------------------------------------------------------------


def test_markdown_table_has_a_column_per_reward():
    """Reward names in first-seen order; ``None``, ``NaN`` and a missing reward read ``n/a``."""
    rows = [
        {"prompt": "What is 2 plus 3?", "generation": "5", "rewards": {"answer_reward": 1.0}},
        {"prompt": "Hi", "generation": "hello", "rewards": {"answer_reward": None, "format_reward": 0.5}},
        {"prompt": "Why?", "generation": "because", "rewards": {"answer_reward": float("nan"), "format_reward": 0.0}},
    ]
    assert markdown_table(rows).splitlines() == [
        "| prompt | generation | reward answer_reward | reward format_reward |",
        "|---|---|---|---|",
        "| What is 2 plus 3? | 5 | 1 | n/a |",
        "| Hi | hello | n/a | 0.5 |",
        "| Why? | because | n/a | 0 |",
    ]
    assert markdown_table([{"prompt": "a", "generation": "b"}]).splitlines()[0] == "| prompt | generation |"


def _prompt_example(tokenizer, question: str, truth: str | None, row: int) -> dict:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}]
    ids = tokenize_prompt(tokenizer, messages)
    fields = {"ground_truth": truth, "level": 1}
    return {"prompt_input_ids": ids, "prompt": messages, "fields": fields, "source": "arith", "row": row}


def test_prompt_of_record_on_a_prompt_example(tokenizer):
    example = _prompt_example(tokenizer, "What is 2 plus 3?", "5", row=4)
    item = prompt_of_record(example)
    assert item.messages == example["prompt"] and item.messages is not example["prompt"]
    assert item.fields == {"ground_truth": "5", "level": 1}
    assert (item.chosen, item.rejected) == (None, None)
    assert item.source == "arith:4"
    item.fields["ground_truth"] = "6"
    assert example["fields"]["ground_truth"] == "5", "the item holds a copy"


class ScriptedPolicy(torch.nn.Module):
    """``generate`` answers prompt ``i`` with ``answers[i]`` (then padding), whatever it is asked."""

    def __init__(self, tokenizer, answers: list[str]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.answers = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in answers]
        self.pad_id = tokenizer.pad_token_id

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        width = max(len(ids) for ids in self.answers)
        new = torch.tensor([ids + [self.pad_id] * (width - len(ids)) for ids in self.answers])
        return torch.cat([input_ids, new], dim=1)


def _stub_trainer(val_examples: list[dict], loggers: list) -> SimpleNamespace:
    """What `GenerationLogger.prepare` and `probe` read of a trainer: validation data, loggers, precision."""
    val_data = SimpleNamespace(records=[{"prompt": e["prompt"]} for e in val_examples], examples=val_examples)
    return SimpleNamespace(
        datamodule=SimpleNamespace(val_data=val_data),
        loggers=loggers,
        precision_plugin=SimpleNamespace(val_step_context=nullcontext),
    )


def test_a_probe_scores_its_generations_with_the_modules_rewards(tokenizer, tmp_path):
    """Three validation prompts answered "The answer is 5." / "... 9." / "... 7.": against ground truths 5, 8
    and none, ``answer_reward`` gives 1.0, 0.0 and None (no ground truth: not scored)."""
    examples = [
        _prompt_example(tokenizer, "What is 2 plus 3?", "5", row=0),
        _prompt_example(tokenizer, "What is 4 plus 4?", "8", row=1),
        _prompt_example(tokenizer, "Say a number.", None, row=2),
    ]
    answers = ["The answer is 5.", "The answer is 9.", "The answer is 7."]
    module = SimpleNamespace(
        tokenizer=tokenizer,
        policy=ScriptedPolicy(tokenizer, answers),
        device=torch.device("cpu"),
        rewards=RewardFunctions(["lit_align.rewards.reward_funcs.answer_reward"]),
    )
    tensorboard = TensorBoardLogger(tmp_path / "tb")
    trainer = _stub_trainer(examples, [tensorboard])
    generation = GenerationLogger(num_val_prompts=3, max_new_tokens=8)
    generation._log_dir = tmp_path
    assert generation.prepare(trainer, module)
    generation.probe(trainer, module, step=7)

    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["prompt"] for row in rows] == ["What is 2 plus 3?", "What is 4 plus 4?", "Say a number."]
    assert [row["generation"] for row in rows] == answers
    assert [row["rewards"] for row in rows] == [{"answer_reward": 1.0}, {"answer_reward": 0.0}, {"answer_reward": None}]
    assert all(row["step"] == 7 for row in rows)

    tensorboard.experiment.flush()
    ((step, table),) = _text_events(tensorboard.log_dir)
    assert step == 7
    assert table.splitlines()[0] == "| prompt | generation | reward answer_reward |"
    assert table.splitlines()[2:] == [
        "| What is 2 plus 3? | The answer is 5. | 1 |",
        "| What is 4 plus 4? | The answer is 9. | 0 |",
        "| Say a number. | The answer is 7. | n/a |",
    ]


def test_no_rewards_without_reward_functions_or_reward_fields(tokenizer, tmp_path):
    """A module without ``rewards`` (SFT, DPO), or prompts given in the config (no ground truth): no reward key."""
    examples = [_prompt_example(tokenizer, "What is 2 plus 3?", "5", row=0)]
    policy = ScriptedPolicy(tokenizer, ["5"])
    rewards = RewardFunctions(["lit_align.rewards.reward_funcs.answer_reward"])
    plain = SimpleNamespace(tokenizer=tokenizer, policy=policy, device="cpu")
    with_rewards = SimpleNamespace(tokenizer=tokenizer, policy=policy, device="cpu", rewards=rewards)
    cases = [
        (GenerationLogger(num_val_prompts=1), plain),
        (GenerationLogger(prompts=["What is 2 plus 3?"]), with_rewards),
    ]
    for number, (generation, module) in enumerate(cases):
        generation._log_dir = tmp_path / str(number)
        trainer = _stub_trainer(examples, [])
        assert generation.prepare(trainer, module)
        generation.probe(trainer, module, step=1)
        (row,) = [json.loads(line) for line in (generation._log_dir / "generations.jsonl").read_text().splitlines()]
        assert row == {"step": 1, "prompt": "What is 2 plus 3?", "generation": "5"}
