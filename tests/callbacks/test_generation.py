"""GenerationLogger on the tiny chat model and the demo data: what it writes, and that it leaves training alone."""

import json
import random
from pathlib import Path

import numpy as np
import torch
from lightning import seed_everything
from lightning.pytorch import Callback

from lit_align.callbacks import GenerationLogger
from lit_align.callbacks.generation import markdown_table, prompt_of_record
from lit_align.data import AlignDataModule, DataSource
from lit_align.models.generation_inputs import left_pad
from lit_align.modules import SFTModule
from lit_align.tensorboard import read_scalars

from ..conftest import DEMO_DATA, TINY_MODEL
from .short_fit import fit_four_steps


class RandomStateProbe(Callback):
    """Records every generator's state when training ends: a leak from generation would show here even where
    the tiny model, having no dropout, would train the same."""

    def on_train_end(self, trainer, pl_module):
        self.states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())


def _fit(save_dir, callbacks):
    seed_everything(7)
    module = SFTModule(str(TINY_MODEL))
    data = AlignDataModule(
        train=[DataSource(str(DEMO_DATA / "sft_train.jsonl"))],
        val=[DataSource(str(DEMO_DATA / "sft_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="sft",
        max_length=128,
        batch_size=8,
        max_val_examples=16,
    )
    return fit_four_steps(module, data, save_dir, callbacks)


def _text_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = Path(log_dir).glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
    accumulator.Reload()
    tag = next(t for t in accumulator.Tags()["tensors"] if t.startswith("generations"))
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in accumulator.Tensors(tag)]


def test_generations_are_logged_and_training_is_unchanged(tmp_path):
    decoy = GenerationLogger(prompts=["decoy"])  # the recipe's own logger; the later one (a fragment's) wins
    generation = GenerationLogger(every_n_steps=3, num_val_prompts=2, max_new_tokens=8, do_sample=True)
    with_probe, without_probe = RandomStateProbe(), RandomStateProbe()
    observed = _fit(tmp_path / "with", [decoy, generation, with_probe])
    plain = _fit(tmp_path / "without", [without_probe])

    # Validation ends at steps 2 and 4, step 3 is a multiple of every_n_steps; the sanity check generates nothing.
    rows = [json.loads(line) for line in (tmp_path / "with" / "lightning_logs" / "version_0" / "generations.jsonl")
            .read_text(encoding="utf-8").splitlines()]  # fmt: skip
    assert [row["step"] for row in rows] == [2, 2, 3, 3, 4, 4]
    assert all(set(row) == {"step", "prompt", "generation"} and isinstance(row["generation"], str) for row in rows)
    assert [row["prompt"] for row in rows[:2]] == ["12 × 3 等于几？", "14和46哪个大？"]  # the last user turns
    texts = _text_events(observed.log_dir)
    assert [step for step, _ in texts] == [2, 3, 4] and "| prompt | generation |" in texts[0][1]

    # Same losses, same random state: generating changed nothing the training could see.
    assert read_scalars(observed.log_dir)["train/loss"] == read_scalars(plain.log_dir)["train/loss"]
    for a, b in zip(with_probe.states, without_probe.states, strict=True):
        assert (a == b).all() if isinstance(a, torch.Tensor | np.ndarray) else a == b


def test_generate_restores_modes_and_answers_given_prompts():
    module = SFTModule(str(TINY_MODEL))
    module.configure_model()
    module.policy.train()
    module.policy.model.layers[0].eval()  # a submodule kept in eval mode stays so
    generation = GenerationLogger(prompts=["What is 2 plus 3?", "天空是什么颜色？"], max_new_tokens=6)
    generation._items = generation._resolve_prompts(trainer=None)
    texts = generation.generate(module)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert module.policy.training and not module.policy.model.layers[0].training
    assert module.policy.model.layers[1].training


def test_prompt_of_record():
    sft = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}  # fmt: skip
    assert [m["content"] for m in prompt_of_record(sft).messages] == ["a", "b", "c"]
    pair = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }
    item = prompt_of_record(pair)
    assert len(item.messages) == 2 and (item.chosen, item.rejected) == ("yes", "no")


def test_markdown_table_and_left_pad():
    table = markdown_table([{"prompt": "a|b", "generation": "x\ny", "chosen": "c", "rejected": "r"}])
    assert table.splitlines() == [
        "| prompt | generation | chosen | rejected |",
        "|---|---|---|---|",
        r"| a\|b | x<br>y | c | r |",
    ]
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_off_where_no_rank_holds_the_whole_weights():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy

    from lit_align.callbacks.policy_probe import sharded as _sharded

    assert _sharded(ModelParallelStrategy()) and _sharded(FSDPStrategy())
    assert not _sharded(DDPStrategy())
