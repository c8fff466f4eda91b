"""Answer extraction and normalisation, on real gsm8k solutions and the ways chat models write answers."""

import json

import pytest

from lit_align.rewards import extract_answer, normalize_answer, reference_answer
from lit_align.rewards.answers import last_boxed, last_number

from ..conftest import SHARED_DATA

GSM8K_TEST = SHARED_DATA / "gsm8k.test.jsonl"

# Literal tails of gsm8k test answers (records 0, 2, 146, 489, 611, 1113 of gsm8k.test.jsonl).
GSM8K_TAILS = [
    ("She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18", "18"),
    ("So he made a profit of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000", "70000"),
    ("In total, that means Johnny picked up 500 + 1500+ 125= <<500+1500+125=2125>>2125 blocks\n#### 2,125", "2,125"),
    ("is -10 degrees Fahrenheit.\n#### -10", "-10"),
    ("So the total cost was 1,350,000+100,000=$<<1350000+100000=1450000>>1,450,000\n#### 1,450,000", "1,450,000"),
    ("Increase 3 degrees = -6 + 3 = -3 degrees\nIt was -3 degrees Celsius in the morning.\n#### -3", "-3"),
]


@pytest.mark.parametrize(("solution", "expected"), GSM8K_TAILS)
def test_gsm8k_solutions_give_the_number_after_hashes(solution, expected):
    assert extract_answer(solution) == expected


def test_every_gsm8k_test_record_extracts_to_its_hashes_number():
    records = [json.loads(line) for line in GSM8K_TEST.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1319
    for i, record in enumerate(records):
        expected = record["answer"].split("####")[-1].strip()
        assert extract_answer(record["answer"]) == expected, f"record {i}"
        assert reference_answer(record["answer"]) == expected, f"record {i}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 5\nwait, recount\n#### 7", "7"),  # the last one
        ("#### 1,234", "1,234"),
        (r"So $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # nested braces
        (r"first \boxed{3}, corrected: \boxed{4}", "4"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count
        (r"the result is \boxed 5 apples", "5"),
        (r"\boxed{\frac{3}{4}} #### 2", "2"),  # #### outranks boxed
        ("<think>2+2 is 4, maybe 5</think><answer>4</answer>", "4"),
        ("<answer>18 dollars</answer>", "18 dollars"),  # short: left to normalisation
        ("<answer>Janet makes $18 every day.</answer>", "$18"),  # prose: its last number
        (r"<answer>The total is \boxed{42}</answer> 7", "42"),
        ("The answer is 42.", "42"),
        ("so the FINAL ANSWER IS -3.5 degrees.\nThanks", "-3.5 degrees"),
        ("Answer: $1,234\nDone 99", "$1,234"),
        ("Final Answer: The final answer is $18$. I hope it is correct.", "$18$"),
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18", "18"),  # last number
        ("It costs $1,234,567.50 in total", "$1,234,567.50"),
        ("The temperature fell to -12 overnight", "-12"),
        ("Read pages 10-12", "12"),  # a hyphen, not a sign
        ("half is .5", ".5"),
        ("I don't know", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  $18.  ", "18"),
        ("\\$18.00", "18.00"),
        ("1,234", "1234"),
        ("1,234,567.5", "1234567.5"),
        ("1,2", "1,2"),  # not groups of three: a list, kept
        ("(1, 23)", "(1,23)"),
        ("18 dollars", "18"),
        ("5 apples", "5"),
        ("3 hours per day", "3"),
        ("5cm", "5"),
        ("2x", "2x"),  # a letter straight after a number is an expression
        (r"\text{18 dollars}", "18"),
        (r"\text{Monday}", "Monday"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\dfrac{3}{4}", r"\frac{3}{4}"),
        (r"\tfrac12", r"\frac12"),
        (r"50\%", "50%"),
        (r"90^\circ", "90"),
        ("x = 5", "5"),
        (r"\pi r^2", r"\pi{}r^2"),  # the space that ends \pi survives as {}
        ("+7", "7"),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_helpers_return_none_when_there_is_nothing():
    assert last_number("no digits here") is None
    assert last_boxed(r"\boxed{unclosed") is None
    assert last_boxed("plain") is None


def test_reference_answer_keeps_a_bare_latex_truth_whole():
    assert reference_answer(r"\frac{1}{2}") == r"\frac{1}{2}"  # not the last number, 2
    assert reference_answer(r"so it is \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert reference_answer("  42 ") == "42"
