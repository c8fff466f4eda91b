"""Symbolic equality of two short answers with sympy, without handing sympy arbitrary text.

``sympy.sympify`` is ``eval`` underneath, and ``sympy.parsing.latex`` needs an antlr runtime of one exact
version (often missing or mismatched). So answers are first turned into a plain expression by a small
converter that knows the LaTeX answers actually look like (``\\frac``, ``\\sqrt``, ``\\cdot``, ``^{...}``,
``\\pi``), then tokenised against a whitelist: numbers, single-letter variables, a few function names,
operators and parentheses. Anything else (longer than 200 characters, an unknown command or word, power
towers such as ``9^9^9``, exponents above 1000) is refused before sympy sees it, and the comparison runs
under a time limit where one can be set (a ``SIGALRM`` timer, main thread only). A refusal means "not
shown equal", never an error: rewards must not crash a training step.
"""

from __future__ import annotations

import math
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

MAX_CHARS = 200
MAX_EXPONENT = 1000
TIME_LIMIT_S = 2.0

_FUNCTIONS = {"sqrt", "log", "ln", "exp", "sin", "cos", "tan"}
_CONSTANTS = {"pi", "e"}
_COMMANDS = {"cdot": "*", "times": "*", "div": "/", "pi": " pi ", **{name: f" {name} " for name in _FUNCTIONS}}
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|([A-Za-z]+)|(\*\*|[-+*/()^]))")


class _Refused(Exception):
    """The input is outside what this module agrees to parse."""


def symbolic_equal(first: str, second: str) -> bool:
    """Whether two answers are the same expression (``2x+1`` and ``1+2*x``, ``\\frac{\\sqrt{2}}{2}`` and
    ``1/sqrt(2)``). Constants compare numerically (relative tolerance 1e-6, as the numeric route does),
    expressions with variables by ``simplify(a - b) == 0``. False when either side is refused or times out."""
    try:
        a, b = _to_plain(first), _to_plain(second)
        with _time_limit(TIME_LIMIT_S):
            return _equal(_parse(a), _parse(b))
    except (_Refused, TimeoutError, ArithmeticError, TypeError, ValueError, SyntaxError, RecursionError):
        return False
    except Exception:  # sympy raises its own errors (SympifyError, PolynomialError, ...) on odd input
        return False


def _equal(a, b) -> bool:
    import sympy

    if not a.free_symbols and not b.free_symbols:
        x, y = complex(sympy.N(a)), complex(sympy.N(b))
        return math.isclose(x.real, y.real, rel_tol=1e-6, abs_tol=1e-9) and math.isclose(
            x.imag, y.imag, rel_tol=1e-6, abs_tol=1e-9
        )
    return sympy.simplify(a - b) == 0


def _to_plain(text: str) -> str:
    """A LaTeX-ish answer as a plain expression string, or `_Refused`."""
    if len(text) > MAX_CHARS:
        raise _Refused("too long")
    s = text.replace("\\left", "").replace("\\right", "").replace("{}", " ")
    s = _replace_fracs_and_roots(s)
    s = re.sub(r"\\([A-Za-z]+)", lambda m: _command(m.group(1)), s)
    if "\\" in s:
        raise _Refused("escape left over")
    return s.replace("{", "(").replace("}", ")")


def _command(name: str) -> str:
    if name not in _COMMANDS:
        raise _Refused(f"unknown command \\{name}")
    return _COMMANDS[name]


def _replace_fracs_and_roots(s: str) -> str:
    r"""``\frac{a}{b}`` -> ``((a)/(b))``, ``\frac12`` -> ``((1)/(2))``, ``\sqrt{a}`` -> ``sqrt(a)``,
    ``\sqrt[n]{a}`` -> ``((a)^(1/(n)))``, innermost first through recursion on the arguments."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i):
            i += len("\\frac")
            numerator, i = _argument(s, i)
            denominator, i = _argument(s, i)
            out.append(f"(({_replace_fracs_and_roots(numerator)})/({_replace_fracs_and_roots(denominator)}))")
        elif s.startswith("\\sqrt", i):
            i += len("\\sqrt")
            degree = None
            if i < len(s) and s[i] == "[":
                end = s.find("]", i)
                if end < 0:
                    raise _Refused("unclosed [")
                degree, i = s[i + 1 : end], end + 1
            radicand, i = _argument(s, i)
            radicand = _replace_fracs_and_roots(radicand)
            out.append(f"sqrt({radicand})" if degree is None else f"(({radicand})^(1/({degree})))")
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _argument(s: str, i: int) -> tuple[str, int]:
    """The LaTeX argument starting at ``s[i]``: a braced group or a single character (``\\frac12``)."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise _Refused("missing argument")
    if s[i] != "{":
        return s[i], i + 1
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1 : j], j + 1
    raise _Refused("unbalanced braces")


def _tokens(s: str) -> list[str]:
    tokens, position = [], 0
    s = s.strip()
    while position < len(s):
        match = _TOKEN.match(s, position)
        if match is None:
            raise _Refused(f"unexpected character {s[position]!r}")
        number, word, operator = match.groups()
        if word is not None and len(word) > 1 and word not in _FUNCTIONS | _CONSTANTS:
            raise _Refused(f"unknown word {word!r}")
        tokens.append(number or word or ("**" if operator == "^" else operator))
        position = match.end()
    return tokens


def _check_powers(tokens: list[str]) -> None:
    """Refuse towers and large exponents: ``2**x**2``, ``9**(9**9)``, ``10**5000`` could run for minutes."""
    for i, token in enumerate(tokens):
        if token != "**":
            continue
        j = i + 1
        while j < len(tokens) and tokens[j] in "+-":
            j += 1
        if j >= len(tokens):
            raise _Refused("dangling power")
        if tokens[j] == "(":
            depth, k = 0, j
            for k in range(j, len(tokens)):
                depth += {"(": 1, ")": -1}.get(tokens[k], 0)
                if tokens[k] == "**" and depth > 0:
                    raise _Refused("power inside an exponent")
                if depth == 0:
                    break
            j = k
        elif tokens[j][0].isdigit() or tokens[j][0] == ".":
            if float(tokens[j]) > MAX_EXPONENT:
                raise _Refused("exponent too large")
        if j + 1 < len(tokens) and tokens[j + 1] == "**":
            raise _Refused("power tower")


def _with_products(tokens: list[str]) -> str:
    """Join tokens, writing the ``*`` that implicit multiplication leaves out (``2x``, ``2(x+1)``, ``(a)(b)``)."""
    out: list[str] = []
    for token in tokens:
        if out:
            previous = out[-1]
            ends_value = previous == ")" or previous[0].isalnum() or previous[0] == "."
            starts_value = token == "(" or token[0].isalnum() or token[0] == "."
            if ends_value and starts_value and not (previous in _FUNCTIONS and token == "("):
                out.append("*")
        out.append(token)
    return " ".join(out)


def _parse(plain: str):
    import sympy
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    tokens = _tokens(plain)
    if not tokens:
        raise _Refused("empty")
    _check_powers(tokens)
    names = {chr(c): sympy.Symbol(chr(c)) for c in [*range(ord("a"), ord("z") + 1), *range(ord("A"), ord("Z") + 1)]}
    # `e` is Euler's number in math answers; `E`, `I`, `N`, `S`, `Q` would otherwise be sympy objects.
    names.update(e=sympy.E, pi=sympy.pi, ln=sympy.log, sqrt=sympy.sqrt, log=sympy.log, exp=sympy.exp)
    names.update(sin=sympy.sin, cos=sympy.cos, tan=sympy.tan)
    return parse_expr(_with_products(tokens), local_dict=names, transformations=standard_transformations)


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` (SIGALRM; only the main thread of a POSIX process can set it).
    Elsewhere the size and power limits above are the only guard."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or signal.getitimer(signal.ITIMER_REAL)[0] > 0:  # never steal a timer someone else set
        yield
        return

    def _raise(signum, frame):
        raise TimeoutError(f"symbolic comparison took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
