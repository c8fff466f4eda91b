"""Text normalisation, language tagging and filtering of internal records.

Sources differ in Unicode forms (full-width Latin in Chinese data), line endings, trailing spaces and runs
of blank lines; left alone, the same answer hashes differently and the model learns formatting noise.
Normalisation must not touch code, though: indentation and blank lines inside a fenced block are part of
the program, so everything except the line endings is left byte-identical inside ``` / ~~~ fences.

`clean_record` is the only place a record is dropped after conversion, apart from de-duplication, which needs the
records before it (`clean_records` here; preparation walks its records in order, `lit_align.data.prepare`). Every drop
is counted under a reason, so a report can always say where the rows went.

NFKC folds full-width Latin letters and digits (ＡＢＣ１２３) to ASCII, which is what de-duplication needs,
but it would also fold Chinese full-width punctuation (，：？！（）) and teach a model to write "," in Chinese
prose. So the full-width punctuation block is left as it is and NFKC applies to everything else;
``nfkc=False`` turns it off altogether.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

MESSAGE_FIELDS = ("messages", "prompt", "chosen", "rejected")
LANG_THRESHOLD = 0.3
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
# Full-width punctuation (U+FF01-FF0F, FF1A-FF20, FF3B-FF40, FF5B-FF65) and the CJK symbols block, kept by NFKC.
_CJK_PUNCTUATION = re.compile("([\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65\u3001-\u303f]+)")
_CJK_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2EBEF),
    (0x2F800, 0x2FA1F),
    (0x30000, 0x323AF),
)


def normalize_text(text: str, *, nfkc: bool = True) -> str:
    """Normalise one message text; fenced code blocks keep their bytes except for line endings.

    Outside code: NFKC, trailing whitespace removed from every line, 3+ consecutive blank lines collapsed
    to 2. The whole text is then stripped. An unclosed fence runs to the end of the text (as in CommonMark).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    blank_run = 0
    fence: str | None = None
    for line in lines:
        if fence is not None:
            out.append(line)
            if _closes(line, fence):
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            out.append(line)
            blank_run = 0
            continue
        line = (_nfkc_keeping_cjk_punctuation(line) if nfkc else line).rstrip()
        blank_run = blank_run + 1 if not line else 0
        if blank_run <= 2:
            out.append(line)
    return "\n".join(out).strip()


def _nfkc_keeping_cjk_punctuation(text: str) -> str:
    parts = _CJK_PUNCTUATION.split(text)  # odd indexes are the punctuation runs
    return "".join(part if i % 2 else unicodedata.normalize("NFKC", part) for i, part in enumerate(parts))


def _closes(line: str, fence: str) -> bool:
    """A closing fence uses the opening's character, at least as many times, and nothing after it."""
    stripped = line.strip()
    return stripped.startswith(fence) and set(stripped) == {fence[0]}


def normalize_record(record: dict, *, nfkc: bool = True) -> dict:
    """Return a copy of `record` with every message content normalised (a prompt record's ``ground_truth`` is left
    as it is: the reward compares it with the model's answer, and a verifier may care about its exact text)."""
    out = dict(record)
    for key in MESSAGE_FIELDS:
        if key in record:
            out[key] = [{**m, "content": normalize_text(m["content"], nfkc=nfkc)} for m in record[key]]
    return out


def record_hash(record: dict) -> str:
    """SHA-256 of the normalised conversation (roles and contents only; source, row and lang excluded), and of a
    prompt record's ground truth: the same question with another answer is another record, not a duplicate."""
    return _digest(normalize_record(record))


def _digest(normalized: dict) -> str:
    canonical = {
        key: [[m["role"], m["content"]] for m in normalized[key]] for key in MESSAGE_FIELDS if key in normalized
    }
    if "ground_truth" in normalized:
        canonical["ground_truth"] = normalized["ground_truth"]
    payload = json.dumps(canonical, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def is_cjk(char: str) -> bool:
    """True for a CJK unified (or compatibility) ideograph."""
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def zh_ratio(text: str) -> float:
    """Share of CJK ideographs among letters and ideographs; digits, punctuation and spaces do not count.

    ``zh_ratio("abc中文")`` is 2 / 5 = 0.4. An English word weighs as many letters as it has, so a Chinese
    answer with some English terms stays well above 0.5. Returns 0.0 when there are no letters at all.
    """
    letters = cjk = 0
    for char in text:
        if char.isalpha():
            letters += 1
            cjk += is_cjk(char)
    return cjk / letters if letters else 0.0


def record_text(record: dict) -> str:
    """The text language is judged on: user and assistant turns without fenced code.

    System prompts (often a stock English sentence), tool JSON and code are left out: they say little
    about the language the conversation is held in and would pull Chinese records towards "en".
    """
    parts = [
        _without_code(m["content"])
        for key in MESSAGE_FIELDS
        for m in record.get(key, ())
        if m["role"] in ("user", "assistant")
    ]
    return "\n".join(parts)


def _without_code(text: str) -> str:
    kept, fence = [], None
    for line in text.split("\n"):
        if fence is not None:
            fence = None if _closes(line, fence) else fence
        elif opening := _FENCE.match(line):
            fence = opening.group(1)
        else:
            kept.append(line)
    return "\n".join(kept)


def detect_lang(record: dict, threshold: float = LANG_THRESHOLD) -> str:
    """``"zh"`` when the zh ratio of the record's user and assistant text is at least `threshold`, else ``"en"``."""
    return "zh" if zh_ratio(record_text(record)) >= threshold else "en"


def clean_records(
    records: Iterable[dict],
    *,
    dedupe: bool = True,
    min_zh_ratio: float | None = None,
    nfkc: bool = True,
    seen: set[str] | None = None,
) -> tuple[list[dict], Counter]:
    """Normalise, filter and language-tag records; returns the kept records and a Counter of drop reasons.

    Reasons: ``empty_turn`` (a message is empty after normalisation), ``chosen_equals_rejected``,
    ``below_min_zh_ratio`` (only when `min_zh_ratio` is set) and ``duplicate`` (same `record_hash` as an
    earlier kept record; checked last so the copy that is kept is one that passed the other filters).
    Pass the same ``seen`` set to calls for several sources to de-duplicate across them.
    """
    kept: list[dict] = []
    dropped: Counter = Counter()
    seen = set() if seen is None else seen
    for record in records:
        record, reason = clean_record(record, min_zh_ratio=min_zh_ratio, nfkc=nfkc)
        if reason is None and dedupe:
            digest = _digest(record)
            reason = "duplicate" if digest in seen else None
            seen.add(digest)
        if reason is None:
            kept.append(record)
        else:
            dropped[reason] += 1
    return kept, dropped


def clean_record(record: dict, *, min_zh_ratio: float | None = None, nfkc: bool = True) -> tuple[dict, str | None]:
    """One record normalised and language-tagged, and the reason it is dropped (None: kept) before
    de-duplication, which needs every earlier record and so stays with the caller (`clean_records`)."""
    record = normalize_record(record, nfkc=nfkc)
    ratio = zh_ratio(record_text(record))
    return _with_lang(record, "zh" if ratio >= LANG_THRESHOLD else "en"), _drop_reason(record, ratio, min_zh_ratio)


def content_digest(cleaned: dict) -> str:
    """`record_hash` of a record that `clean_record` already normalised (normalising twice changes nothing)."""
    return _digest(cleaned)


def _drop_reason(record: dict, ratio: float, min_zh_ratio: float | None) -> str | None:
    if any(not m["content"] for key in MESSAGE_FIELDS for m in record.get(key, ())):
        return "empty_turn"
    if "chosen" in record and record["chosen"] == record.get("rejected"):
        return "chosen_equals_rejected"
    if min_zh_ratio is not None and ratio < min_zh_ratio:
        return "below_min_zh_ratio"
    return None


def _with_lang(record: dict, lang: str) -> dict:
    """Set ``lang`` keeping the schema's key order (conversation, source, lang, row)."""
    out = {k: v for k, v in record.items() if k not in ("lang", "row")}
    out["lang"] = lang
    if "row" in record:
        out["row"] = record["row"]
    return out
