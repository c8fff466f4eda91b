"""Is an extracted answer equal to the ground truth? One verifier for evaluation and for RL rewards.

Evaluation (the ``gsm8k_chat`` lm-eval task) and GRPO answer rewards must agree on what counts as correct,
or a model is trained towards one notion and measured on another. The checks run cheapest first:

1. the same string after `normalize_answer` (``$1,234.`` and ``1234``);
2. numbers: ``0.5``, ``1/2``, ``\\frac{1}{2}`` and ``50%`` parse to floats and compare with relative tolerance
   1e-6 and absolute tolerance 1e-9. When both sides are numbers this decides: ``12`` is not ``120`` whatever
   a symbolic engine might make of them;
3. sympy (`lit_align.rewards.symbolic`): ``2x+1`` and ``1+2x``, ``\\frac{\\sqrt{2}}{2}`` and ``1/sqrt(2)``;
4. ``math_verify`` (Hugging Face's verifier, the ``math`` extra) when installed, for LaTeX our converter does
   not read (sets, intervals, matrices, equations).

A percentage is ambiguous: "50%" is 0.5 as a fraction and 50 as the number the question asked for (gsm8k
ground truths are plain numbers: "what percent ...? #### 50"). Both readings are accepted, so ``50%`` matches
``50`` and ``0.5``; ``50`` and ``0.5`` without the sign do not match each other.
"""

from __future__ import annotations

import importlib.util
import math
import re
import threading
from functools import cache

from lit_align.rewards.answers import normalize_answer
from lit_align.rewards.symbolic import symbolic_equal

RELATIVE_TOLERANCE = 1e-6
ABSOLUTE_TOLERANCE = 1e-9
MATH_VERIFY_TIMEOUT_S = 5

_DECIMAL = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
_PLAIN = re.compile(rf"^({_DECIMAL})(%?)$")
_SLASH = re.compile(rf"^({_DECIMAL})/({_DECIMAL})$")
_FRAC = re.compile(r"^([-+]?)\\frac(?:\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}|(\d)(\d))$")


def answers_match(predicted: str | None, ground_truth: str, use_math_verify: bool | None = None) -> bool:
    """Whether ``predicted`` (an extracted answer, see `extract_answer`) equals ``ground_truth``.

    Args:
        predicted: The model's answer; None or blank never matches.
        ground_truth: The reference answer (a number, an expression, LaTeX).
        use_math_verify: Also ask ``math_verify`` when the cheaper checks fail. None: when it is installed;
            False: never (for tests and for identical results on machines with and without it); True: required.
    """
    if predicted is None or not predicted.strip() or not ground_truth.strip():
        return False
    a, b = normalize_answer(predicted), normalize_answer(ground_truth)
    if a and a == b:
        return True
    numbers_a, numbers_b = numeric_values(a), numeric_values(b)
    if numbers_a and numbers_b:
        return any(_close(x, y) for x in numbers_a for y in numbers_b)
    if a and b and symbolic_equal(a, b):
        return True
    if _wants_math_verify(use_math_verify):
        return _math_verify_match(predicted, ground_truth)
    return False


def numeric_values(normalized: str) -> tuple[float, ...]:
    """The values a normalised answer can mean: one for ``0.5``, ``1/2``, ``\\frac{1}{2}``; two for ``50%``
    (0.5 and 50); none for anything that is not a plain number or fraction of numbers."""
    if match := _PLAIN.match(normalized):
        value = float(match.group(1))
        return (value / 100, value) if match.group(2) else (value,)
    if match := _SLASH.match(normalized):
        return _ratio(match.group(1), match.group(2))
    if match := _FRAC.match(normalized):
        sign, numerator = match.group(1), match.group(2) or match.group(4)
        denominator = match.group(3) or match.group(5)
        values = _ratio(numerator, denominator)
        return tuple(-v for v in values) if sign == "-" else values
    return ()


def _ratio(numerator: str, denominator: str) -> tuple[float, ...]:
    bottom = float(denominator)
    return (float(numerator) / bottom,) if bottom != 0 else ()


def _close(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


@cache
def math_verify_installed() -> bool:
    """Whether the optional ``math_verify`` package can be imported."""
    return importlib.util.find_spec("math_verify") is not None


def _wants_math_verify(use_math_verify: bool | None) -> bool:
    if use_math_verify is None:
        return math_verify_installed()
    if use_math_verify and not math_verify_installed():
        raise ImportError(
            "answers_match(use_math_verify=True) needs the math_verify package: pip install 'lit_align[math]' "
            "(or pip install math-verify), or pass use_math_verify=None to use it only when installed"
        )
    return use_math_verify


def _as_latex(answer: str) -> str:
    """math_verify reads LaTeX between delimiters (or in ``\\boxed``); a bare ``\\frac{1}{2}`` it may miss."""
    answer = answer.strip()
    return answer if "$" in answer or "\\boxed" in answer or "\\(" in answer else f"${answer}$"


def _math_verify_match(predicted: str, ground_truth: str) -> bool:
    from math_verify import parse, verify

    # Its timeouts use SIGALRM, which only the main thread may set; elsewhere run without one.
    timeout = MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(_as_latex(ground_truth), parsing_timeout=timeout)
        answer = parse(_as_latex(predicted), parsing_timeout=timeout)
        return bool(gold and answer and verify(gold, answer, timeout_seconds=timeout))
    except Exception:  # a verifier that crashes must cost a reward, not the training step
        return False
