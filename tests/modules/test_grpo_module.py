"""GRPOModule through a real Trainer on the arithmetic task: rollouts, rewards, reuse, masking, KL, validation."""

import json

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lit_align.checks import ConfigError
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.losses.grpo import GRPOLoss
from lit_align.modules import GRPOModule
from lit_align.rewards import answer_reward
from lit_align.rollouts.sampling import SamplingSettings

from ..conftest import ROOT

ARITH_MODEL = ROOT / "assets" / "tiny-arith"
ARITH_DATA = ROOT / "assets" / "arithmetic"


def never_rewarded(prompts, completions, **kwargs):
    """A reward no completion can earn."""
    return [0.0 for _ in completions]


def last_word_as_number(prompts, completions, ground_truth, **kwargs):
    """A user's reward with a bug: it assumes every completion ends with a number."""
    return [float(int(c.split()[-1].rstrip(".")) == int(g)) for c, g in zip(completions, ground_truth, strict=True)]


@pytest.fixture
def prompts_file(tmp_path):
    rows = (ARITH_DATA / "train.jsonl").read_text().splitlines()[:32]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def _data(prompts_file, val=None, batch_repeats=1, batch_size=4, max_val_examples=None):
    return AlignDataModule(
        [DataSource(str(prompts_file))],
        val=[DataSource(str(val))] if val else None,
        tokenizer=str(ARITH_MODEL),
        task="prompt",
        max_length=64,
        batch_size=batch_size,
        batch_repeats=batch_repeats,
        max_val_examples=max_val_examples,
    )


def _module(**kwargs):
    kwargs.setdefault("num_generations", 4)
    kwargs.setdefault("sampling", SamplingSettings(max_completion_length=16))
    kwargs.setdefault("optimizer", lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0))
    return GRPOModule(str(ARITH_MODEL), **kwargs)


class Recorder(Callback):
    """Keeps every logged step metric, the batch's sampling fields, and the gradient norm before each step."""

    def __init__(self):
        self.metrics, self.batches, self.grad_norms = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.batches.append((batch.completion_tokens, batch.generation_time, batch.index.tolist()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.stack(grads).norm()) if grads else 0.0)


def _fit(module, data, tmp_path, monkeypatch, steps=1, seed=0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)  # a Trainer without a logger exports hf/ into the working directory
    seed_everything(seed)
    recorder = Recorder()
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[recorder],
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    return recorder


def test_the_same_seed_gives_the_same_first_step(prompts_file, tmp_path, monkeypatch):
    runs = [_fit(_module(), _data(prompts_file), tmp_path / str(i), monkeypatch) for i in range(2)]
    first, second = (run.metrics[0] for run in runs)
    for name in ("train/reward", "train/completions/mean_length", "train/loss", "train/entropy"):
        assert first[name] == second[name], name
    assert 0.0 <= first["train/reward"] <= 1.1
    # TRL's metric names, all logged at the first step
    for name in (
        "train/reward_std",
        "train/frac_reward_zero_std",
        "train/rewards/answer_reward/mean",
        "train/rewards/answer_reward/std",
        "train/rewards/format_reward/mean",
        "train/completions/max_length",
        "train/completions/clipped_ratio",
        "train/clip_ratio/low_mean",
        "train/clip_ratio/high_mean",
        "train/clip_ratio/region_mean",
    ):
        assert name in first, name


def test_a_reward_nobody_earns_teaches_nothing(prompts_file, tmp_path, monkeypatch):
    module = _module(reward_funcs=[f"{__name__}.never_rewarded"])
    module.configure_model()
    before = {name: p.detach().clone() for name, p in module.policy.named_parameters()}
    recorder = _fit(module, _data(prompts_file), tmp_path, monkeypatch)
    metrics = recorder.metrics[0]
    assert metrics["train/frac_reward_zero_std"] == 1.0
    assert metrics["train/reward"] == 0.0
    assert recorder.grad_norms == [0.0]
    for name, p in module.policy.named_parameters():
        assert torch.equal(p.detach(), before[name]), name  # AdamW without weight decay: a zero gradient moves nothing


def test_num_iterations_reuses_a_batch_rollout_with_real_ratios(prompts_file, tmp_path, monkeypatch):
    module = _module(num_iterations=2)
    recorder = _fit(module, _data(prompts_file, batch_repeats=2), tmp_path, monkeypatch, steps=4)
    (tokens0, time0, index0), (tokens1, time1, index1) = recorder.batches[:2]
    assert index0 == index1 and tokens0 == tokens1  # the same prompts, the same completions
    assert time0 > 0 and time1 == 0.0  # sampled once
    assert recorder.batches[2][2] != index0  # the next batch is new
    assert recorder.metrics[0]["train/reward"] == recorder.metrics[1]["train/reward"]
    # First pass: ratio exactly 1, nothing clipped; the second pass sees the weights of one update later.
    assert recorder.metrics[0]["train/clip_ratio/region_mean"] == 0.0
    assert recorder.metrics[0]["train/loss"] != recorder.metrics[1]["train/loss"]


def test_kl_to_the_reference_starts_at_zero(prompts_file, tmp_path, monkeypatch):
    module = _module(loss=GRPOLoss(beta=0.1))
    recorder = _fit(module, _data(prompts_file), tmp_path, monkeypatch, steps=2)
    assert recorder.metrics[0]["train/kl"] == 0.0  # the reference is a copy of the starting weights
    assert recorder.metrics[1]["train/kl"] > 0.0


def test_masked_truncated_completions_carry_no_gradient(prompts_file, tmp_path, monkeypatch):
    # Every answer needs more than 2 tokens: all are truncated, all are masked.
    module = _module(sampling=SamplingSettings(max_completion_length=2), mask_truncated_completions=True)
    recorder = _fit(module, _data(prompts_file), tmp_path, monkeypatch)
    assert recorder.metrics[0]["train/completions/clipped_ratio"] == 1.0
    assert recorder.grad_norms == [0.0]


def test_validation_accuracy_is_the_answer_reward_of_greedy_answers(prompts_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = _module()
    data = _data(prompts_file, val=ARITH_DATA / "val.jsonl", max_val_examples=8)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    metrics = trainer.validate(module, datamodule=data)[0]
    assert set(metrics) >= {
        "val/accuracy",
        "val/reward",
        "val/rewards/answer_reward/mean",
        "val/completions/mean_length",
    }
    # By hand: greedy answers from transformers' own generate, scored by the verifier.
    rows = [json.loads(line) for line in (ARITH_DATA / "val.jsonl").read_text().splitlines()[:8]]
    tokenizer, policy = module.tokenizer, module.policy
    right = 0
    for row in rows:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["prompt"]}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = policy.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        right += answer_reward(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True), row["ground_truth"])
    assert metrics["val/accuracy"] == pytest.approx(right / 8)


def test_validation_leaves_the_training_random_stream_alone(prompts_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = _module()
    data = _data(prompts_file, val=ARITH_DATA / "val.jsonl", max_val_examples=4)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    first = trainer.validate(module, datamodule=data)[0]
    assert trainer.validate(module, datamodule=data)[0] == first  # the same sampled answers every validation
    batch = next(iter(data.val_dataloader()))  # (creating a DataLoader iterator draws a seed: torch's own doing)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    module.on_validation_epoch_start()
    with torch.no_grad():
        module.validation_step(batch, 0)
    assert torch.equal(torch.rand(3), expected)


def test_settings_that_cannot_work_stop_before_loading():
    with pytest.raises(ConfigError, match="num_generations must be at least 2"):
        _module(num_generations=1)
    with pytest.raises(ConfigError, match="use_vllm"):
        _module(use_vllm=True)  # no CUDA here
    with pytest.raises(ConfigError, match="scale_rewards"):
        _module(scale_rewards="rank")
    with pytest.raises(ConfigError, match="beta > 0"):
        _module(reference_model_name_or_path=str(ARITH_MODEL))
    with pytest.raises(ConfigError, match="reward_funcs"):
        _module(reward_funcs=["lit_align.rewards.no_such_reward"])


@pytest.mark.parametrize("strategy", ["fsdp", "model_parallel"])
def test_sharded_strategies_are_refused_with_a_message(strategy, monkeypatch):
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

    module = _module()
    fake = FSDPStrategy() if strategy == "fsdp" else ModelParallelStrategy()
    monkeypatch.setattr(type(module), "trainer", property(lambda self: SimpleNamespace(strategy=fake)))
    monkeypatch.setattr(module, "_trainer", object())
    with pytest.raises(ConfigError, match="FSDP, FSDP2 and DeepSpeed ZeRO-3 do not hold"):
        module.setup("fit")


def test_a_reward_function_that_raises_stops_the_run_naming_record_and_completion(tmp_path, monkeypatch, capsys):
    from lit_align.cli import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    args = [
        "fit", "--config", "configs/quickstart/grpo.yaml", "--trainer.max_steps=1", "--validate_before_training=false",
        f"--model.init_args.reward_funcs=[{__name__}.last_word_as_number]",
        "--model.init_args.sampling.max_completion_length=3", f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: reward function last_word_as_number" in err
    assert "(record val:1)" in err and "invalid literal for int()" in err and "completion: '" in err
