"""Task ``prompt``: prompt-only rows with a ground truth, from the row to the left-padded `PromptBatch`."""

import json
from collections import Counter

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import move_data_to_device

from lit_align.checks import ConfigError
from lit_align.data.batch import PromptBatch, SequenceBatch
from lit_align.data.clean import clean_records
from lit_align.data.collate import PromptCollator
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.errors import DataFormatError, FieldError
from lit_align.data.examples import tokenize_record
from lit_align.data.formats import FORMATS, detect_format
from lit_align.data.prepare import PrepareSettings, prepare_sources

from ..conftest import SHARED_DATA, TINY_MODEL

GSM8K = SHARED_DATA / "gsm8k.train.jsonl"
needs_shared = pytest.mark.skipif(not GSM8K.is_file(), reason="needs ../shared/data")


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def convert(row):
    (record,) = FORMATS["prompt"](row)
    return record


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- the prompt format ---------------------------------------------------------------------------------


def test_prompt_string_with_ground_truth_keeps_scalar_columns_as_fields():
    row = {"prompt": "What is 2+3?", "ground_truth": "5", "level": 2, "hard": False, "tags": ["add"], "meta": {}}
    assert convert(row) == {
        "prompt": [u("What is 2+3?")],
        "ground_truth": "5",
        "fields": {"ground_truth": "5", "level": 2, "hard": False},
    }


def test_numbers_become_their_text():
    row = {"prompt": [{"role": "system", "content": "Be brief."}, u("2+5?")], "answer": 7}
    assert convert(row) == {
        "prompt": [{"role": "system", "content": "Be brief."}, u("2+5?")],
        "ground_truth": "7",
        "fields": {"answer": 7, "ground_truth": "7"},
    }
    assert convert({"prompt": "5/2?", "solution": 2.5})["ground_truth"] == "2.5"


def test_question_and_query_rows():
    gsm8k = {"question": "Natalia sold 48 clips ...", "answer": "48/2 = <<48/2=24>>24\n#### 72"}
    assert convert(gsm8k) == {
        "prompt": [u("Natalia sold 48 clips ...")],
        "ground_truth": "48/2 = <<48/2=24>>24\n#### 72",
        "fields": {"answer": "48/2 = <<48/2=24>>24\n#### 72", "ground_truth": "48/2 = <<48/2=24>>24\n#### 72"},
    }
    metamath = {"query": "1+1?", "response": "The answer is: 2", "type": "GSM_Rephrased"}
    assert convert(metamath)["ground_truth"] == "The answer is: 2"
    assert convert(metamath)["fields"] == {
        "response": "The answer is: 2",
        "type": "GSM_Rephrased",
        "ground_truth": "The answer is: 2",
    }


def test_messages_ending_with_a_user_turn_take_the_answer_column():
    row = {"messages": [u("Hi"), a("Hello"), u("3*3?")], "solution": "9"}
    assert convert(row) == {
        "prompt": [u("Hi"), a("Hello"), u("3*3?")],
        "ground_truth": "9",
        "fields": {"solution": "9", "ground_truth": "9"},
    }


def test_chat_rows_give_the_last_assistant_turn_as_ground_truth():
    row = {"messages": [u("Hi"), a("Hello"), u("3*3?"), a("9")], "id": "x1"}
    assert convert(row) == {
        "prompt": [u("Hi"), a("Hello"), u("3*3?")],
        "ground_truth": "9",
        "fields": {"id": "x1", "ground_truth": "9"},
    }
    # A worked solution beside a short answer column: the column is the ground truth.
    with_answer = {"messages": [u("3*3?"), a("3 times 3 is 9.")], "answer": "9"}
    assert convert(with_answer)["prompt"] == [u("3*3?")] and convert(with_answer)["ground_truth"] == "9"


def test_other_sft_layouts_take_the_last_assistant_turn():
    alpaca = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
    assert convert(alpaca) == {"prompt": [u("Add 2 and 3.")], "ground_truth": "5", "fields": {"ground_truth": "5"}}


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"prompt": "2+2?", "ground_truth": True}, "ground_truth", "got bool"),
        ({"prompt": "2+2?", "answer": [4]}, "answer", "got list"),
        ({"prompt": "2+2?", "answer": {"value": 4}}, "answer", "got dict"),
        ({"prompt": "2+2?", "solution": "  "}, "solution", "empty"),
        ({"prompt": "2+2?"}, "ground_truth", "missing"),
        ({"prompt": [u("2+2?"), a("4")], "answer": "4"}, "prompt", "must end with a user or tool message"),
        ({"prompt": [], "answer": "4"}, "prompt", "empty"),
        ({"messages": [a("4")]}, "messages", "no user message"),
        ({"prompt": [{"role": "tool", "content": "4"}], "answer": "4"}, "prompt", "no user message"),
        ({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "chosen", "no single ground truth"),
    ],
)
def test_bad_rows_name_the_field(row, field, reason):
    with pytest.raises(FieldError) as err:
        FORMATS["prompt"](row)
    assert err.value.field == field and reason in err.value.reason


def test_detection():
    assert detect_format({"prompt": "2+2?", "ground_truth": "4"}) == "prompt"
    assert detect_format({"prompt": [u("2+2?")], "answer": "4"}) == "prompt"
    assert detect_format({"messages": [u("2+2?")], "solution": "4"}) == "prompt"
    assert detect_format({"messages": [u("2+2?"), a("4")], "answer": "4"}) == "messages"
    assert detect_format({"prompt": "2+2?", "chosen": "4", "rejected": "5", "answer": "4"}) == "preference"
    assert detect_format({"question": "2+2?", "answer": "4"}) == "qa"


# ---- reading and preparing -----------------------------------------------------------------------------

BAD_ROWS = [
    {"prompt": "2+2?", "answer": "4"},
    {"prompt": "3+3?", "answer": True},  # line 2
    "not json",  # line 3
    {"prompt": "4+4?", "answer": 8},
]


def test_bad_row_stops_with_file_line_and_field(tmp_path, tokenizer):
    path = write_rows(tmp_path / "prompts.jsonl", BAD_ROWS)
    with pytest.raises(DataFormatError) as err:
        prepare_sources([DataSource(str(path))], tokenizer, PrepareSettings(task="prompt"))
    assert str(err.value) == f"{path}:2: field 'answer': expected the answer as a string or a number, got bool"


def test_bad_rows_are_counted_under_skip(tmp_path, tokenizer):
    path = write_rows(tmp_path / "prompts.jsonl", BAD_ROWS)
    data = prepare_sources([DataSource(str(path))], tokenizer, PrepareSettings(task="prompt", on_error="skip"))
    counts = data.reports[0].counts
    assert counts["rows_read"] == 4 and counts["examples"] == 2
    assert counts["error/answer"] == 1 and counts["error/row"] == 1
    assert [e["fields"]["ground_truth"] for e in data.examples] == ["4", "8"]


@needs_shared
def test_gsm8k_prepares_as_prompts_with_its_answer_column(tokenizer):
    data = prepare_sources([DataSource(str(GSM8K))], tokenizer, PrepareSettings(task="prompt", max_length=512))
    report = data.reports[0]
    assert report.format == "prompt" and report.counts["examples"] == 500
    first = data.examples[0]
    assert set(first["fields"]) == {"answer", "ground_truth"}
    assert first["fields"]["ground_truth"].endswith("#### 72") and first["row"] == 1
    assert first["prompt"] == [u(json.loads(GSM8K.open().readline())["question"])]
    assert first["length"] == len(first["prompt_input_ids"])


def test_declared_sft_format_gives_prompts_and_preference_pairs_are_refused(tmp_path, tokenizer):
    chat = write_rows(tmp_path / "chat.jsonl", [{"messages": [u("Hi"), a("Hello"), u("2+2?"), a("4")]}])
    data = prepare_sources([DataSource(str(chat), format="messages")], tokenizer, PrepareSettings(task="prompt"))
    assert data.records[0]["prompt"] == [u("Hi"), a("Hello"), u("2+2?")]
    assert data.examples[0]["fields"] == {"ground_truth": "4"}

    pairs = write_rows(tmp_path / "pairs.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    with pytest.raises(ConfigError, match="source 'pairs' line 1: preference pairs have no single ground truth"):
        prepare_sources([DataSource(str(pairs), format="preference")], tokenizer, PrepareSettings(task="prompt"))


def test_preference_rows_read_as_auto_name_file_and_line(tmp_path, tokenizer):
    pairs = write_rows(tmp_path / "pairs.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    with pytest.raises(DataFormatError, match=r"pairs.jsonl:1: field 'chosen': preference pairs have no single"):
        prepare_sources([DataSource(str(pairs))], tokenizer, PrepareSettings(task="prompt"))


def test_prompt_records_cannot_feed_sft_or_preference(tmp_path, tokenizer):
    path = write_rows(tmp_path / "prompts.jsonl", [{"prompt": "2+2?", "answer": "4"}])
    for task in ("sft", "preference"):
        with pytest.raises(ConfigError, match="source 'prompts' line 1 is prompt-only data.*GRPOModule"):
            prepare_sources([DataSource(str(path))], tokenizer, PrepareSettings(task=task))


def test_same_question_with_another_answer_is_not_a_duplicate():
    records = [convert({"prompt": "x?", "answer": "1"}), convert({"prompt": "x? ", "answer": "2"})]
    records.append(convert({"prompt": "x?", "answer": "1"}))
    kept, dropped = clean_records(records)
    assert [r["ground_truth"] for r in kept] == ["1", "2"] and dropped == Counter(duplicate=1)


# ---- tokenisation --------------------------------------------------------------------------------------


def test_system_prompt_and_template_render_into_the_ids(tokenizer):
    record = {"prompt": [{"role": "system", "content": "Be exact."}, u("2+3?")], "ground_truth": "5"}
    settings = PrepareSettings(task="prompt", system_prompt="Be brief.", prompt_template="{prompt}\nAnswer after ####.")
    example = tokenize_record(record, tokenizer, settings, Counter())
    assert tokenizer.decode(example["prompt_input_ids"]) == (
        "<|im_start|>system\nBe brief.\n\nBe exact.<|im_end|>\n"
        "<|im_start|>user\n2+3?\nAnswer after ####.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert example["prompt"][1] == u("2+3?\nAnswer after ####.")
    assert example["fields"] == {"ground_truth": "5"} and example["length"] == len(example["prompt_input_ids"])


def test_too_long_prompts_are_dropped_and_counted(tmp_path, tokenizer):
    # One "x" renders to 13 tokens with the tiny template, 40 of them to 52.
    rows = [{"prompt": "x", "answer": "1"}, {"prompt": "x" * 40, "answer": "2"}, {"prompt": "y", "answer": "3"}]
    path = write_rows(tmp_path / "p.jsonl", rows)
    settings = PrepareSettings(task="prompt", max_length=20, max_truncated_fraction=0.5)
    report = prepare_sources([DataSource(str(path))], tokenizer, settings).reports[0]
    assert report.counts["examples"] == 2 and report.counts["dropped/prompt_too_long"] == 1
    assert report.truncated_lengths == [52] and report.counts["truncated"] == 0
    strict = PrepareSettings(task="prompt", max_length=20, max_truncated_fraction=0.2)
    with pytest.raises(
        ConfigError, match=r"1 of 3 prompts \(33.3%\) are longer than max_length=20 tokens and were dropped"
    ):
        prepare_sources([DataSource(str(path))], tokenizer, strict)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"task": "sft", "system_prompt": "Be brief."}, "data.system_prompt"),
        ({"task": "preference", "prompt_template": "{prompt}!"}, "data.prompt_template"),
        ({"task": "prompt", "prompt_template": "Solve it."}, "data.prompt_template"),
        ({"task": "prompt", "prompt_template": "{prompt} in {language}"}, "data.prompt_template"),
        ({"task": "prompt", "prompt_template": "{prompt} {"}, "data.prompt_template"),
    ],
)
def test_prompt_settings_that_cannot_work(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        PrepareSettings(**kwargs)


# ---- batches and the data module -----------------------------------------------------------------------


def test_prompt_batch_is_left_padded_and_survives_the_device_move():
    examples = [
        {"prompt_input_ids": [5, 6, 7], "prompt": [u("a")], "fields": {"ground_truth": "1"}, "source": "s", "row": 2},
        {"prompt_input_ids": [8], "prompt": [u("b")], "fields": {"ground_truth": "2", "n": 3}, "source": "s", "row": 9},
    ]
    batch = PromptCollator(pad_token_id=0)(examples)
    assert batch.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.sources == ["s:2", "s:9"] and batch.index is None and batch.num_samples == 2
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert moved.prompts == [[u("a")], [u("b")]] and moved.fields == [
        {"ground_truth": "1"},
        {"ground_truth": "2", "n": 3},
    ]
    assert moved.sources == ["s:2", "s:9"] and moved.completion_tokens == 0 and moved.generation_time == 0.0


def test_packing_is_refused_for_prompts():
    with pytest.raises(ConfigError, match="data.packing"):
        AlignDataModule([], tokenizer=str(TINY_MODEL), task="prompt", packing=True)


def _prompt_module(tmp_path, **kwargs):
    rows = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i), "level": i % 3} for i in range(12)]
    train = write_rows(tmp_path / "train.jsonl", rows[:8])
    val = write_rows(tmp_path / "val.jsonl", rows[8:])
    defaults = dict(tokenizer=str(TINY_MODEL), task="prompt", max_length=64, batch_size=2, eval_batch_size=3)
    data = AlignDataModule([DataSource(str(train))], [DataSource(str(val))], **{**defaults, **kwargs})
    data.setup()
    return data


def test_data_module_serves_prompt_batches_for_training_and_validation(tmp_path):
    data = _prompt_module(tmp_path, prompt_template="{prompt} Answer after ####.")
    batches = list(data.train_dataloader())
    assert len(batches) == 4 and all(b.split == "train" and b.input_ids.shape[0] == 2 for b in batches)
    assert sorted(i for b in batches for i in b.index.tolist()) == list(range(8))
    for batch in batches:
        for i, index in enumerate(batch.index.tolist()):
            real = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
            assert real == data.split_examples("train")[index]["prompt_input_ids"]
            assert set(batch.fields[i]) == {"answer", "level", "ground_truth"}
    val = list(data.val_dataloader())
    assert [b.input_ids.shape[0] for b in val] == [3, 1] and val[0].sources[0] == "val:1"
    assert val[0].prompts[0] == [u("What is 8 + 8? Answer after ####.")]
    assert "| train | `" in data.data_card() and "- prompt_template: `{prompt} Answer after ####.`" in data.data_card()


def test_generated_examples_replace_the_prompts_from_the_next_loader(tmp_path):
    data = _prompt_module(tmp_path)
    generated = [
        {"input_ids": [1, 2, 3 + i], "labels": [-100, 2, 3 + i], "length": 3, "lang": "en", "source": "train"}
        for i in range(4)
    ]
    data.use_generated_examples(generated)
    batches = list(data.train_dataloader())
    assert len(batches) == 2 and data.train_dataloader().dataset[0]["split"] == "generated"
    assert sorted(row[-1] for b in batches for row in b.input_ids.tolist()) == [3, 4, 5, 6]
    assert all(b.labels[:, 0].tolist() == [-100, -100] for b in batches)
    assert len(data.split_examples("train")) == 8 and "prompt_input_ids" in data.split_examples("train")[0]
    assert generated[0].keys() == {"input_ids", "labels", "length", "lang", "source"}  # not modified
    with pytest.raises(ValueError, match=r"generated example 0 lacks \['labels', 'lang'\]"):
        data.use_generated_examples([{"input_ids": [1], "length": 1, "source": "x"}])


class _ExpertIterationStandIn(LightningModule):
    """Records what each epoch trains on; after epoch 0 hands the data module two 'kept completions'."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, type, list[int]]] = []

    def training_step(self, batch, batch_idx):
        last_tokens = batch.input_ids[:, -1].tolist()
        self.seen.append((self.current_epoch, type(batch), last_tokens))
        return (self.weight - 1).pow(2).sum()

    def on_train_epoch_end(self) -> None:
        kept = [{"input_ids": [1, 7, 8 + i], "labels": [-100, 7, 8 + i], "length": 3} for i in range(2)]
        self.trainer.datamodule.use_generated_examples([{**e, "lang": "en", "source": "train"} for e in kept])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_generated_examples_are_served_after_lightning_reloads_the_loader(tmp_path):
    data = _prompt_module(tmp_path, batch_size=2)
    module = _ExpertIterationStandIn()
    trainer = Trainer(
        max_epochs=2,
        reload_dataloaders_every_n_epochs=1,
        limit_val_batches=0,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    assert [(epoch, kind) for epoch, kind, _ in module.seen] == [(0, PromptBatch)] * 4 + [(1, SequenceBatch)]
    assert sorted(module.seen[-1][2]) == [8, 9]
    assert trainer.train_dataloader.batch_sampler.epoch == 1
