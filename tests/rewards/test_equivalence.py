"""answers_match: equal answers written differently match, near misses never do, with and without math_verify."""

import threading

import pytest

from lit_align.rewards import answers_match
from lit_align.rewards.equivalence import math_verify_installed, numeric_values
from lit_align.rewards.symbolic import symbolic_equal

VERIFIERS = [
    pytest.param(False, id="own-checks"),
    pytest.param(
        True,
        id="math_verify",
        marks=pytest.mark.skipif(not math_verify_installed(), reason="math_verify is not installed"),
    ),
]

SAME = [
    ("18", "18"),
    ("$18.00", "18"),
    ("1,234", "1234"),
    ("-1,450,000", "-1450000"),
    (r"\frac{3}{4}", "0.75"),
    (r"\dfrac{3}{4}", "0.75"),
    (r"-\frac{1}{2}", "-0.5"),
    (r"\frac12", "0.5"),
    ("3/4", "0.75"),
    ("50%", "50"),  # the number the question asked for
    ("50%", "0.5"),  # the fraction
    (r"50\%", "50"),
    ("0.333333333", "1/3"),  # within relative tolerance 1e-6
    ("18 dollars", "18"),
    (r"\text{18 dollars}", "$18"),
    ("x = 5", "5"),
    ("2x+1", "1+2*x"),
    (r"\frac{\sqrt{2}}{2}", "1/sqrt(2)"),
    ("sqrt(2)/2", "1/sqrt(2)"),
    (r"\pi r^2", "pi*r**2"),
    ("0.7071068", r"\frac{\sqrt2}{2}"),
    (r"\left(1,2\right)", "(1, 2)"),
]

DIFFERENT = [
    ("12", "120"),
    ("0.5", "5"),
    ("1,234", "1234.5"),
    ("-3", "3"),
    ("50", "0.5"),  # without a percent sign there is one reading
    ("0.33", "1/3"),
    ("2x+1", "2x-1"),
    ("1,2", "12"),  # a list, not a thousands number
    ("", "18"),
    ("   ", "18"),
    (None, "18"),
    ("18", ""),
]


@pytest.mark.parametrize("use_math_verify", VERIFIERS)
@pytest.mark.parametrize(("predicted", "truth"), SAME)
def test_equal_answers_match(predicted, truth, use_math_verify):
    assert answers_match(predicted, truth, use_math_verify=use_math_verify)


@pytest.mark.parametrize("use_math_verify", VERIFIERS)
@pytest.mark.parametrize(("predicted", "truth"), DIFFERENT)
def test_different_answers_do_not_match(predicted, truth, use_math_verify):
    assert not answers_match(predicted, truth, use_math_verify=use_math_verify)


@pytest.mark.skipif(not math_verify_installed(), reason="math_verify is not installed")
def test_math_verify_adds_latex_our_checks_cannot_read():
    sets = (r"\{1, 2\}", r"\{2, 1\}")
    assert not answers_match(*sets, use_math_verify=False)
    assert answers_match(*sets, use_math_verify=True)


def test_requiring_a_missing_math_verify_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr("lit_align.rewards.equivalence.math_verify_installed", lambda: False)
    assert not answers_match("a", "b")  # None: used only when installed
    with pytest.raises(ImportError, match="pip install"):
        answers_match("a", "b", use_math_verify=True)


def test_numeric_values():
    assert numeric_values("50%") == (0.5, 50.0)
    assert numeric_values(r"\frac{1}{4}") == (0.25,)
    assert numeric_values("-3/4") == (-0.75,)
    assert numeric_values("1/0") == ()
    assert numeric_values("2x") == ()


@pytest.mark.parametrize(
    "hostile",
    [
        "9^9^9",  # a power tower
        "9^(9^9)",
        "10^{5000}",  # an exponent above 1000
        "__import__('os')",
        "x.__class__",
        "a" * 201,  # longer than 200 characters
        r"\unknowncommand{1}",
        "yes",  # a word is not a product of symbols
    ],
)
def test_symbolic_route_refuses_hostile_or_unreadable_input(hostile):
    assert not symbolic_equal(hostile, "1")


def test_symbolic_route_works_off_the_main_thread():
    """Reward workers run in threads, where SIGALRM timers cannot be set: the comparison still works."""
    results = []
    worker = threading.Thread(target=lambda: results.append(symbolic_equal("2x+1", "1+2x")))
    worker.start()
    worker.join()
    assert results == [True]
