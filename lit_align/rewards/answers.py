"""Find the final answer in a model's text and bring it to one canonical spelling.

gsm8k's reference solutions end with ``#### 18``, but a chat model asked the same question rarely writes
``####``: it writes ``\\boxed{18}``, ``<answer>18</answer>``, "The answer is $18." or just ends on the number.
Scoring only ``####`` would grade the prompt format, not the arithmetic, so extraction tries the common
conventions in a fixed order (the most explicit first) and falls back to the last number in the text, the
convention of lm-eval's "flexible-extract" gsm8k filter.

Normalisation then removes what changes the spelling but not the value: currency and math dollars, thousands
commas, a trailing period, ``\\text{...}`` wrappers, unit words after a number (``18 dollars``), ``\\left`` and
``\\right``, spacing, ``\\dfrac``. It works on strings only; deciding that ``0.5`` and ``\\frac{1}{2}`` are the
same value is `lit_align.rewards.equivalence`'s job.
"""

from __future__ import annotations

import re

# A number as people write it: optional sign or currency, thousands groups of exactly three digits, decimals.
_NUMBER = re.compile(r"(?:-\$?|\$-?)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?:-\$?|\$-?)?\.\d+")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)(\s*)")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_PHRASE = re.compile(r"\b(?:final\s+)?answer\s*(?:is\b|:)\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\n|\.(?=\s|$)")
# Words of two letters or more that are not part of a LaTeX command (``\frac`` contributes none).
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_MATH_WORDS = {"sqrt", "pi", "sin", "cos", "tan", "log", "ln", "exp", "infty"}

_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{")
_SPACING = re.compile(r"\\[!,;: ]|\\quad|\\qquad")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*(?=\S)")
_THOUSANDS = re.compile(r"(?<![\d.])(?<!\d,)\d{1,3}(?:,\d{3})+(?!\d|,\d)")
_PLAIN_NUMBER = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?%?"
_NUMBER_THEN_WORDS = re.compile(rf"^({_PLAIN_NUMBER})\s+[A-Za-z][A-Za-z.'\s-]*$")
# Units written straight after a number (``5cm``); a lone letter such as ``x`` or ``m`` is left alone, since
# ``2x`` is an expression.
_UNITS = "cm|mm|km|kg|mg|ml|mph|ft|lbs|lb|oz|hrs|hr|hours|min|mins|sec|dollars|cents|st|nd|rd|th"
_NUMBER_THEN_UNIT = re.compile(rf"^({_PLAIN_NUMBER})(?:{_UNITS})\.?$")


def extract_answer(text: str | None) -> str | None:
    """The final answer written in ``text``, as written (not normalised), or None when there is none.

    Priority: the last ``#### ...`` line (gsm8k), the last ``\\boxed{...}`` (braces matched, so
    ``\\boxed{\\frac{1}{2}}`` is whole; ``\\boxed 5`` too), the last ``<answer>...</answer>``, the last
    "The (final) answer is ..." / "Answer: ..." (case-insensitive, up to the end of its sentence), else the
    last number in the text (``-3``, ``1,234,567``, ``$18.50``).

    Inside an answer tag or phrase, a nested ``\\boxed`` wins, and prose ("she makes $18 a day") is reduced to
    its last number; a short span ("18 dollars", ``\\frac{3}{4}``, ``x = 5``) is returned as it is and left to
    `normalize_answer`.
    """
    if not text:
        return None
    for finder in (_after_hashes, last_boxed, _in_answer_tag, _after_answer_phrase):
        found = finder(text)
        if found:
            return found
    return last_number(text)


def normalize_answer(text: str) -> str:
    """``text`` in a canonical spelling, so that string equality means equal answers more often.

    Dropped: surrounding space, ``$`` (currency and ``$...$`` math), ``\\left``/``\\right``, LaTeX spacing,
    ``^\\circ``, ``\\text{...}``-style wrappers (their content stays), a leading ``x =`` (one letter), a trailing
    period, unit words after a plain number (``18 dollars``, ``5 apples``, ``3 hours per day``, ``5cm``), and
    all whitespace. ``\\dfrac``/``\\tfrac`` become ``\\frac``, ``\\%`` becomes ``%``.

    Thousands commas go only where they group digits in threes, ``1,234,567`` -> ``1234567``; anything else
    (``1,2`` or ``(1,23)``) is a list and keeps its commas. A lone integer in a list of threes (``(1,234)``)
    cannot be told apart and reads as a thousands number: gsm8k answers are never tuples.
    """
    s = text.strip()
    s = _SPACING.sub(" ", _LEFT_RIGHT.sub("", s))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%")
    s = _DEGREES.sub("", s)
    s = _unwrap_text(s).strip()
    s = _ASSIGNMENT.sub("", s)
    s = s.rstrip(".").strip()
    s = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), s)
    words = _NUMBER_THEN_WORDS.match(s) or _NUMBER_THEN_UNIT.match(s)
    if words:
        s = words.group(1)
    # A space that ends a LaTeX command is meaningful (``\pi r`` is not ``\pir``): keep it as an empty group.
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", r"\1{}", s)
    s = re.sub(r"\s+", "", s)
    return s[1:] if s.startswith("+") else s


def reference_answer(ground_truth: str) -> str:
    """The answer in a reference solution: after its last ``####`` (gsm8k), else its last ``\\boxed{...}``
    (MATH), else the whole text stripped. Unlike `extract_answer` it never falls back to the last number, since
    a ground truth such as ``\\frac{1}{2}`` is the answer itself."""
    return _after_hashes(ground_truth) or last_boxed(ground_truth) or ground_truth.strip()


def last_number(text: str) -> str | None:
    """The last number in ``text`` as written, or None. A ``-`` right after a word, digit or bracket is a
    hyphen or a subtraction (``pages 10-12``, ``(5)-3``), not a sign, and is left out."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    number = last.group()
    before = text[last.start() - 1] if last.start() > 0 else " "
    if number.startswith("-") and (before.isalnum() or before in ")]}"):
        number = number[1:]
    return number


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox``) with balanced braces, or of ``\\boxed 5``."""
    for match in reversed(list(_BOXED.finditer(text))):
        rest = text[match.end() :]
        if rest.startswith("{"):
            content = _braced(rest)
            if content is not None and content.strip():
                return content.strip()
        elif match.group(1):  # `\boxed 5`: the argument is the next token
            token = re.match(r"[^\s$]+", rest)
            if token:
                return token.group()
    return None


def _braced(text: str) -> str | None:
    """What lies between ``text[0] == "{"`` and its matching ``}`` (escaped ``\\{`` ``\\}`` skipped), or None."""
    depth, i = 0, 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[1:i]
        i += 1
    return None


def _unwrap_text(s: str) -> str:
    r"""``\text{ dollars}`` -> `` dollars``, for every wrapper, nested or not; an unbalanced one is left as is."""
    while (match := _TEXT_WRAPPERS.search(s)) is not None:
        content = _braced(s[match.end() - 1 :])
        if content is None:
            return s
        s = s[: match.start()] + content + s[match.end() + len(content) + 1 :]
    return s


def _after_hashes(text: str) -> str | None:
    found = [m.strip() for m in _HASHES.findall(text) if m.strip()]
    return found[-1] if found else None


def _in_answer_tag(text: str) -> str | None:
    found = [m for m in _ANSWER_TAG.findall(text) if m.strip()]
    return _refine(found[-1]) if found else None


def _after_answer_phrase(text: str) -> str | None:
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        span = _SENTENCE_END.split(text[match.end() :], maxsplit=1)[0]
        if span.strip():
            return _refine(span)
    return None


def _refine(span: str) -> str | None:
    """The answer inside an answer tag or phrase: a nested ``\\boxed`` or ``####`` wins; prose becomes its last
    number; a short answer stays as written."""
    span = span.strip()
    inner = _after_hashes(span) or last_boxed(span)
    if inner:
        return inner
    prose = [word for word in _WORD.findall(_unwrap_text(span)) if word.lower() not in _MATH_WORDS]
    if len(prose) >= 2:
        return last_number(span) or span
    return span
