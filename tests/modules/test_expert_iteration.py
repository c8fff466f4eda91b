"""ExpertIterationModule through a real Trainer: rounds sampled per epoch, right answers kept, written, trained on."""

import json

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lit_align.checks import ConfigError
from lit_align.constants import IGNORE_INDEX
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.modules import ExpertIterationModule
from lit_align.optim import LRSchedule
from lit_align.rewards import answer_reward
from lit_align.rollouts.sampling import SamplingSettings

from ..conftest import ROOT

ARITH_MODEL = ROOT / "assets" / "tiny-arith"
ARITH_DATA = ROOT / "assets" / "arithmetic"


@pytest.fixture
def prompts_file(tmp_path):
    rows = (ARITH_DATA / "train.jsonl").read_text().splitlines()[:24]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def _module(**kwargs):
    kwargs.setdefault("num_generations", 4)
    kwargs.setdefault("sampling", SamplingSettings(max_completion_length=16))
    kwargs.setdefault("lr_schedule", LRSchedule(kind="constant"))
    kwargs.setdefault("optimizer", lambda params: torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0))
    return ExpertIterationModule(str(ARITH_MODEL), **kwargs)


def _data(prompts_file):
    return AlignDataModule(
        [DataSource(str(prompts_file))], tokenizer=str(ARITH_MODEL), task="prompt", max_length=64, batch_size=4
    )


class Batches(Callback):
    def __init__(self):
        self.per_epoch = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.per_epoch.setdefault(trainer.current_epoch, []).append(batch)


def _trainer(tmp_path, epochs=2, reload=1, callbacks=()):
    return Trainer(
        max_epochs=epochs,
        reload_dataloaders_every_n_epochs=reload,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
    )


def test_each_round_trains_on_right_answers_it_sampled_and_wrote(prompts_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed_everything(0)
    module, batches = _module(max_per_prompt=1), Batches()
    _trainer(tmp_path, callbacks=[batches]).fit(module, datamodule=_data(prompts_file))
    truths = {i + 1: json.loads(line)["ground_truth"] for i, line in enumerate(prompts_file.read_text().splitlines())}
    for number in (1, 2):
        records = [json.loads(line) for line in (tmp_path / "expert_iteration" / f"round_{number}.jsonl").open()]
        assert records, number
        for record in records:  # every kept answer is right, at most one per prompt
            assert answer_reward(record["completion"], truths[int(record["source"].rsplit(":", 1)[1])]) == 1.0
        assert len({r["source"] for r in records}) == len(records)
    # The last round's SFT examples: the sampled completion is labelled, the prompt is not.
    tokenizer = module.tokenizer
    for example in module.round_examples:
        labels, ids = example["labels"], example["input_ids"]
        start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        assert all(label == IGNORE_INDEX for label in labels[:start]) and labels[start:] == ids[start:]
        assert tokenizer.decode(ids[:start]).endswith("assistant\n")
    # Epoch 2 trained on round 2's examples, not on prompts.
    assert all(batch.labels.shape == batch.input_ids.shape for batch in batches.per_epoch[1])
    assert module.round_epoch == 1


def test_round_statistics_are_logged(prompts_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed_everything(0)
    module = _module()
    trainer = _trainer(tmp_path, epochs=1)
    trainer.fit(module, datamodule=_data(prompts_file))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["ei/round"] == 1.0
    assert 0 < metrics["ei/kept_fraction"] <= metrics["ei/correct_fraction"] <= 1
    assert metrics["ei/examples"] == pytest.approx(metrics["ei/kept_fraction"] * 24 * 4)
    assert metrics["ei/prompts_solved_fraction"] >= metrics["ei/kept_fraction"]  # at most k kept per solved prompt


def test_rounds_survive_a_checkpoint():
    module = _module()
    module.round_epoch, module.round_examples = 2, [{"input_ids": [1, 2], "labels": [-100, 2]}]
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    restored = _module()
    restored.on_load_checkpoint(checkpoint)
    assert restored.round_epoch == 2 and restored.round_examples == module.round_examples
    assert restored.examples_for_epoch(2) is restored.round_examples  # not sampled again


def test_settings_that_cannot_work(prompts_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="reload_dataloaders_every_n_epochs"):
        _trainer(tmp_path, reload=0).fit(_module(), datamodule=_data(prompts_file))
    with pytest.raises(ConfigError, match="kind: constant"):
        _trainer(tmp_path).fit(_module(lr_schedule=LRSchedule(kind="cosine")), datamodule=_data(prompts_file))
    with pytest.raises(ConfigError, match="max_per_prompt"):
        _module(max_per_prompt=0)


def test_a_round_with_nothing_right_stops_the_run(prompts_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = _module(accuracy_reward="tests.modules.test_grpo_module.never_rewarded")
    with pytest.raises(ConfigError, match="round 1: none of 96 completions was right"):
        _trainer(tmp_path).fit(module, datamodule=_data(prompts_file))
