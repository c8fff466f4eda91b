"""answer_reward and format_reward on completions a chat model would write, and pass@k by hand."""

import subprocess
import sys

import pytest

from lit_align.rewards import answer_reward, format_reward, pass_at_k

# The first gsm8k test record's reference solution.
JANET = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18"
)


@pytest.mark.parametrize("use_math_verify", [False, None])
@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("She sells 9 eggs for $2 each, so she makes $18.", 1.0),
        (r"9 eggs at \$2 each: $\boxed{18}$", 1.0),
        ("<think>16-3-4=9, 9*2=18</think>\n<answer>$18.00</answer>", 1.0),
        ("The answer is 18 dollars.", 1.0),
        ("She makes 180 dollars.", 0.0),
        ("The answer is 18. Then again, it is 9 eggs.", 1.0),  # the phrase outranks the last number
        ("I cannot tell.", 0.0),
        ("", 0.0),
    ],
)
def test_answer_reward_against_a_full_gsm8k_solution(completion, reward, use_math_verify):
    assert answer_reward(completion, JANET, use_math_verify=use_math_verify) == reward


def test_answer_reward_against_bare_answers():
    assert answer_reward(r"so \boxed{\dfrac{3}{4}}", "0.75", use_math_verify=False) == 1.0
    assert answer_reward("The answer is 0.75", r"\frac{3}{4}", use_math_verify=False) == 1.0
    assert answer_reward("It went up by 50%.", "50", use_math_verify=False) == 1.0
    assert answer_reward("It is -3 degrees.", "3", use_math_verify=False) == 0.0


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("<think>9*2=18</think><answer>18</answer>", 1.0),
        ("\n  <think>\n9*2=18\n</think>\n\n<answer> 18 </answer>\n", 1.0),
        ("<think></think><answer></answer>", 1.0),  # layout only; content is answer_reward's job
        ("<answer>18</answer><think>9*2=18</think>", 0.0),  # wrong order
        ("<think>9*2=18</think>", 0.0),  # no answer
        ("<answer>18</answer>", 0.0),  # no think
        ("Sure! <think>9*2=18</think><answer>18</answer>", 0.0),  # text outside
        ("<think>9*2=18</think> so <answer>18</answer>", 0.0),  # text between
        ("<think>9*2=18</think><answer>18</answer><answer>18</answer>", 0.0),  # a tag twice
        ("<think>a <think> b</think><answer>18</answer>", 0.0),
        ("18", 0.0),
    ],
)
def test_format_reward(completion, reward):
    assert format_reward(completion) == reward


def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # only 2 wrong samples: every 3-subset holds a right one
    assert pass_at_k(1, 1, 1) == 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(n, c, k)


def test_rewards_import_without_torch():
    """lm-eval task utilities and reward workers import the verifier without paying for a model stack."""
    code = "import sys, lit_align.rewards as r; r.answer_reward('#### 5', '5'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
