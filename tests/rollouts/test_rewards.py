"""RewardFunctions: importing a recipe's reward functions, calling them in TRL's convention, weights and NaN by
hand, and errors that name the function, the record and the completion.

The reward functions the tests need are defined below and named by their import path, as a recipe would."""

import math
import sys

import numpy as np
import pytest
import torch

from lit_align.checks import ConfigError
from lit_align.rollouts.rewards import RewardError, RewardFunctions, weighted_total

HERE = "tests.rollouts.test_rewards"
BUILTIN = "lit_align.rewards.reward_funcs"
PROMPT = [{"role": "user", "content": "What is 9 * 2?"}]
NOT_A_FUNCTION = 42
CALLS: list[dict] = []


def column_a(prompts, completions, a, **kwargs):
    return a


def column_b(prompts, completions, b, **kwargs):
    return b


def recording(prompts, completions, **kwargs):
    CALLS.append({"prompts": prompts, "completions": completions, **kwargs})
    return [0.0] * len(completions)


def explodes_on_boom(prompts, completions, **kwargs):
    return [1.0 / (0 if "boom" in text else 1) for text in completions]


def fails_on_batches(prompts, completions, **kwargs):
    if len(completions) > 1:
        raise MemoryError("batch too large")
    return [1.0]


def returns_three(prompts, completions, **kwargs):
    return [1.0, 1.0, 1.0]


def returns_string(prompts, completions, **kwargs):
    return "1.0"


def returns_values(prompts, completions, values, **kwargs):
    return values


def no_kwargs(prompts, completions):
    return [1.0] * len(completions)


def functions(*names, weights=None):
    return RewardFunctions([f"{HERE}.{name}" for name in names], weights)


def batch(fields, completions=None):
    count = len(fields)
    return {
        "prompts": [PROMPT] * count,
        "completions": completions or [f"completion {i}" for i in range(count)],
        "fields": fields,
        "sources": [f"arithmetic_train.jsonl:{i + 1}" for i in range(count)],
    }


def test_weighted_total_skips_none_and_is_nan_when_nothing_scored():
    """Rows: a=1, b=2 -> 1*1 + 0.5*2 = 2.0; only b=3 -> 0.5*3 = 1.5; nothing -> NaN; only a=0.5 -> 0.5."""
    scores = functions("column_a", "column_b", weights=[1.0, 0.5]).score(
        **batch([{"a": 1.0, "b": 2.0}, {"b": 3.0}, {}, {"a": 0.5}])
    )
    nan = math.nan
    torch.testing.assert_close(
        scores.per_func, torch.tensor([[1.0, 2.0], [nan, 3.0], [nan, nan], [0.5, nan]]), equal_nan=True
    )
    torch.testing.assert_close(scores.total, torch.tensor([2.0, 1.5, nan, 0.5]), equal_nan=True)
    assert scores.per_func.dtype == torch.float32
    assert scores.names == ["column_a", "column_b"]
    assert scores.unscorable == 1


def test_weighted_total_of_zero_rewards_is_zero_not_nan():
    per_func = torch.tensor([[0.0, math.nan], [math.nan, math.nan]])
    total = weighted_total(per_func, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(total, torch.tensor([0.0, math.nan]), equal_nan=True)


def test_each_function_gets_every_column_as_a_list_once_per_batch():
    CALLS.clear()
    fields = [{"ground_truth": "18", "level": 1, "prompt": "dropped"}, {"level": 2, "topic": "eggs"}]
    functions("recording").score(**batch(fields, ["a", "b"]), trainer_step=7)
    assert len(CALLS) == 1, "one call for the whole batch"
    assert CALLS[0] == {
        "prompts": [PROMPT, PROMPT],
        "completions": ["a", "b"],
        "ground_truth": ["18", None],  # a record without the column gives None there
        "level": [1, 2],
        "topic": [None, "eggs"],
        "trainer_step": 7,  # extra keywords arrive as they are
    }


def test_default_weights_and_names_of_repeated_functions():
    rewards = RewardFunctions([f"{BUILTIN}.format_reward", f"{BUILTIN}:format_reward", f"{BUILTIN}.answer_reward"])
    assert rewards.names == ["format_reward", "format_reward_2", "answer_reward"]
    assert rewards.weights == [1.0, 1.0, 1.0]


def test_builtin_functions_together():
    """answer 1 + 0.5 * format 1 = 1.5; wrong answer, no format: 0; no ground truth: answer None, format 0 -> 0."""
    rewards = RewardFunctions([f"{BUILTIN}.answer_reward", f"{BUILTIN}.format_reward"], [1.0, 0.5])
    completions = ["<think>9*2=18</think><answer>18</answer>", "It is 17.", "Eighteen."]
    fields = [{"ground_truth": "Nine twos.\n#### 18"}, {"ground_truth": "18"}, {"ground_truth": None}]
    scores = rewards.score(**batch(fields, completions))
    torch.testing.assert_close(scores.per_func, torch.tensor([[1.0, 1.0], [0.0, 0.0], [math.nan, 0.0]]), equal_nan=True)
    torch.testing.assert_close(scores.total, torch.tensor([1.5, 0.0, 0.0]))
    assert scores.unscorable == 0


def test_empty_batch():
    scores = functions("column_a", "column_b").score(**batch([]))
    assert scores.per_func.shape == (0, 2) and scores.total.shape == (0,) and scores.unscorable == 0


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("no_such_package.rewards.f", "no module named 'no_such_package'"),
        (f"{BUILTIN}.answer_rewards", "has no attribute 'answer_rewards'"),
        (f"{HERE}:NOT_A_FUNCTION", "is an object of type int, not a function"),
        ("answer_reward", f"did you mean {BUILTIN}.answer_reward"),
        ("", "must be an import path"),
    ],
)
def test_a_path_that_does_not_import_names_its_setting(path, reason):
    with pytest.raises(ConfigError) as caught:
        RewardFunctions([f"{BUILTIN}.format_reward", path])
    assert "model.init_args.reward_funcs[1]" in str(caught.value)
    assert reason in str(caught.value)


def test_no_functions_or_wrong_weights_are_refused():
    with pytest.raises(ConfigError, match=r"model\.init_args\.reward_funcs must list at least one"):
        RewardFunctions([])
    with pytest.raises(ConfigError, match=r"model\.init_args\.reward_weights has 1 weights for 2 reward functions"):
        functions("column_a", "column_b", weights=[1.0])
    with pytest.raises(ConfigError, match=r"model\.init_args\.reward_weights\[1\] must be a finite number"):
        functions("column_a", "column_b", weights=[1.0, math.inf])


def test_a_raising_function_names_the_record_and_the_completion():
    completions = ["fine", "fine too", "boom " + "x" * 1000 + " the end", "boom again"]
    with pytest.raises(RewardError) as caught:
        functions("column_a", "explodes_on_boom").score(**batch([{"a": 1.0}] * 4, completions))
    message = str(caught.value)
    assert f"explodes_on_boom ({HERE}.explodes_on_boom)" in message
    assert "completion 2 (record arithmetic_train.jsonl:3)" in message  # the first failing one, not the last
    assert "ZeroDivisionError" in message and "'boom xxx" in message and "the end'" in message
    assert len(message) < 600, "the completion is shortened"
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_a_function_that_fails_only_on_the_whole_batch():
    with pytest.raises(RewardError, match="on the batch of 2 completions .* none of them alone: MemoryError"):
        functions("fails_on_batches").score(**batch([{}, {}]))


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("returns_three", "returned 3 values for 2 completions"),
        ("returns_string", "returned str '1.0'; it must return a list"),
        ("no_kwargs", r"does not accept the keyword argument\(s\) \['a'\].*add \*\*kwargs"),
        ("column_b", r"needs the argument\(s\) \['b'\].*available: \['a'\]"),
    ],
)
def test_functions_that_do_not_fit_the_convention(function, expected):
    with pytest.raises(RewardError, match=expected):
        functions(function).score(**batch([{"a": 1.0}, {"a": 2.0}]))


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1.0", [1.0]])
def test_a_value_that_is_not_a_reward_names_its_index_and_record(bad):
    with pytest.raises(RewardError, match=r"returned .* for completion 1 \(record arithmetic_train\.jsonl:2\)"):
        functions("returns_values").score(**batch([{}, {}]), values=[1.0, bad])


def test_numpy_and_torch_values_are_rewards():
    scores = functions("returns_values").score(**batch([{}, {}, {}]), values=np.array([1.0, 0.0, 0.5]))
    assert scores.total.tolist() == [1.0, 0.0, 0.5]
    scores = functions("returns_values").score(**batch([{}, {}]), values=[np.float32(0.25), torch.tensor(2.0)])
    assert scores.total.tolist() == [0.25, 2.0]


def test_a_module_in_the_current_directory_gets_a_hint(tmp_path, monkeypatch):
    """The ``lit_align`` command does not search the current directory, where a user's reward file usually is."""
    (tmp_path / "my_lit_align_rewards.py").write_text("def brevity(prompts, completions, **kwargs):\n    return []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", str(tmp_path))])
    with pytest.raises(ConfigError, match=r"my_lit_align_rewards is in the current directory.*PYTHONPATH=\."):
        RewardFunctions(["my_lit_align_rewards.brevity"])
    monkeypatch.syspath_prepend(str(tmp_path))
    assert RewardFunctions(["my_lit_align_rewards.brevity"]).names == ["brevity"]
