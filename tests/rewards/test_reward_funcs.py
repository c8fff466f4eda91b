"""The TRL-shaped batch reward functions a recipe names in ``reward_funcs``, on completions a chat model writes."""

import subprocess
import sys
import textwrap

import pytest

from lit_align.rewards.reward_funcs import answer_reward, format_reward

# The end of the first gsm8k test record's reference solution.
JANET = "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18"
PROMPT = [{"role": "user", "content": "How much does Janet make every day?"}]


def test_answer_reward_scores_each_completion_against_its_own_ground_truth():
    completions = [
        "<think>16-3-4=9, 9*2=18</think><answer>18</answer>",
        "She makes $17 a day.",
        r"So \boxed{0.75}",
        "The answer is 18.",
    ]
    truths = [JANET, JANET, r"\frac{3}{4}", "17"]
    assert answer_reward([PROMPT] * 4, completions, truths) == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("missing", [None, "", "  \n"])
def test_answer_reward_is_none_without_a_ground_truth(missing):
    """A record without a ground truth is "not applicable", not wrong: None, which the caller leaves out."""
    assert answer_reward([PROMPT] * 2, ["18", "18"], [JANET, missing]) == [1.0, None]


def test_answer_reward_accepts_and_ignores_other_columns():
    assert answer_reward(prompts=[PROMPT], completions=["18"], ground_truth=["18"], level=["easy"], step=3) == [1.0]


def test_answer_reward_refuses_a_ground_truth_list_of_another_length():
    with pytest.raises(ValueError):
        answer_reward([PROMPT] * 2, ["18", "18"], [JANET])


def test_format_reward_checks_the_layout_only():
    completions = [
        "<think>9*2=18</think><answer>18</answer>",
        "<think>9*2=18</think>\n<answer>17</answer>\n",  # wrong answer, right layout
        "<answer>18</answer>",
        "18",
    ]
    assert format_reward([PROMPT] * 4, completions) == [1.0, 1.0, 0.0, 0.0]
    assert format_reward(prompts=[PROMPT], completions=["x"], ground_truth=[JANET]) == [0.0]


def test_the_docstring_example_runs():
    """The custom function the module docstring shows, run as a user would write it."""
    from lit_align.rewards import reward_funcs

    example = reward_funcs.__doc__.split("::\n", 1)[1].split("\n\n", 1)[0]  # the indented block after ``::``
    namespace: dict = {}
    exec(textwrap.dedent(example), namespace)
    assert namespace["brevity_reward"]([PROMPT] * 2, ["", "x" * 1000], ground_truth=[None, None]) == [1.0, 0.5]


def test_reward_funcs_import_without_torch():
    code = "import sys, lit_align.rewards.reward_funcs as r; r.format_reward([], ['x']); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
