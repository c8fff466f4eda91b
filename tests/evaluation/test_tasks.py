"""Finding tasks and their local files: a missing file or an unknown task stops before lm-eval runs."""

import pytest

from lit_align.evaluation.tasks import PROJECT_TASKS, local_task_files, task_specs

from ..conftest import SHARED_DATA

INCLUDE = str(PROJECT_TASKS)


def test_the_project_tasks_are_found_by_name():
    found = local_task_files(INCLUDE)
    assert {"demo_choice", "gsm8k_local", "gsm8k_chat"} <= set(found)
    assert found["gsm8k_chat"].name == "gsm8k_chat.yaml"


def test_tasks_without_replaced_files_pass_by_name(monkeypatch):
    monkeypatch.chdir(PROJECT_TASKS.parents[2])  # the YAMLs' paths start at the repository root
    assert task_specs(["demo_choice", "hellaswag"], {}, INCLUDE) == ["demo_choice", "hellaswag"]


def test_a_replaced_file_keeps_the_few_shot_split_and_the_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_TASKS.parents[2])
    test_file = tmp_path / "test.jsonl"
    test_file.write_text((SHARED_DATA / "gsm8k.test.jsonl").read_text().splitlines()[0] + "\n")
    (spec,) = task_specs(["gsm8k_local"], {"gsm8k_local": str(test_file)}, INCLUDE)
    assert spec["task"] == "gsm8k_local" and spec["num_fewshot"] == 5  # the YAML's whole config
    assert spec["dataset_kwargs"]["data_files"] == {"train": "../shared/data/gsm8k.train.jsonl", "test": str(test_file)}


def test_a_missing_file_names_task_setting_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_TASKS.parents[2])
    with pytest.raises(FileNotFoundError) as error:
        task_specs(["gsm8k_chat"], {"gsm8k_chat": str(tmp_path / "nope.jsonl")}, INCLUDE)
    message = str(error.value)
    assert "gsm8k_chat" in message and "data_files.gsm8k_chat" in message and "nope.jsonl" in message
    monkeypatch.chdir(tmp_path)  # the YAML's own relative path does not exist from here
    with pytest.raises(FileNotFoundError, match=r"dataset_kwargs.data_files in .*demo_choice.yaml"):
        task_specs(["demo_choice"], {}, INCLUDE)


def test_data_files_for_a_task_not_evaluated_or_not_local():
    with pytest.raises(ValueError, match="gsm8k_chat, which is not among tasks"):
        task_specs(["demo_choice"], {"gsm8k_chat": "x.jsonl"}, INCLUDE)
    with pytest.raises(ValueError, match="only a task defined in include_path"):
        task_specs(["hellaswag"], {"hellaswag": "x.jsonl"}, INCLUDE)
