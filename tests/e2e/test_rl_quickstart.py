"""End to end: the RL quickstarts as a user runs them (GRPO and expert iteration on the arithmetic task, from
assets/tiny-arith), and GRPO under DDP on two CPU processes.

The full GRPO quickstart is the claim the README makes: held-out accuracy rises by at least 0.15. Its runs
take about two minutes each on 2 cores."""

import json

import pytest

from lit_align.tensorboard import read_scalars

from .test_quickstart import _fit

pytestmark = pytest.mark.slow

GRPO_METRICS = (
    "train/loss", "train/reward", "train/reward_std", "train/frac_reward_zero_std",
    "train/rewards/answer_reward/mean", "train/rewards/answer_reward/std",
    "train/rewards/format_reward/mean", "train/rewards/format_reward/std",
    "train/completions/mean_length", "train/completions/max_length", "train/completions/clipped_ratio",
    "train/clip_ratio/low_mean", "train/clip_ratio/high_mean", "train/clip_ratio/region_mean", "train/entropy",
    "perf/generation_time", "perf/tokens_per_sec", "perf/grad_norm",
    "val/reward", "val/rewards/answer_reward/mean", "val/accuracy",
)  # fmt: skip


def test_grpo_quickstart_raises_held_out_accuracy(tmp_path):
    run = _fit("configs/quickstart/grpo.yaml", tmp_path, "--trainer.log_every_n_steps=5")
    scalars = read_scalars(run)
    assert not [name for name in GRPO_METRICS if name not in scalars]
    accuracy = [value for _, value in scalars["val/accuracy"]]
    sampled = [value for _, value in scalars["val/rewards/answer_reward/mean"]]
    assert scalars["val/accuracy"][0][0] == 0  # measured before the first step
    assert accuracy[-1] >= accuracy[0] + 0.15, accuracy
    assert sampled[-1] >= sampled[0] + 0.15, sampled
    rows = [json.loads(line) for line in (run / "generations.jsonl").open()]
    assert rows and set(rows[0]["rewards"]) == {"answer_reward", "format_reward"}


def test_expert_iteration_quickstart_keeps_more_each_round(tmp_path):
    run = _fit("configs/quickstart/expert_iteration.yaml", tmp_path)
    scalars = read_scalars(run)
    kept = [value for _, value in scalars["ei/kept_fraction"]]
    assert [value for _, value in scalars["ei/round"]] == [1.0, 2.0, 3.0]
    assert kept[2] > kept[0], kept
    for number in (1, 2, 3):
        assert (run / "expert_iteration" / f"round_{number}.jsonl").stat().st_size > 0
    accuracy = [value for _, value in scalars["val/accuracy"]]
    assert accuracy[-1] > accuracy[0], accuracy


def test_grpo_under_ddp_on_two_processes(tmp_path):
    run = _fit(
        "configs/quickstart/grpo.yaml", tmp_path,
        "--config", "configs/strategy/ddp.yaml", "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--data.max_val_examples=16",
        "--model.init_args.num_iterations=2",
    )  # fmt: skip
    scalars = read_scalars(run)
    assert [step for step, _ in scalars["train/reward"]] == [0, 1, 2, 3]
    # num_iterations 2: steps 0 and 1 train on one rollout (the same rewards over both ranks), 2 and 3 on the next
    assert scalars["train/reward"][0][1] == scalars["train/reward"][1][1]
    assert 0 <= scalars["val/accuracy"][-1][1] <= 1
    assert (run / "hf" / "model.safetensors").is_file()
