"""Record cleaning: text normalisation around code blocks, language ratio, hashing and counted drops."""

from collections import Counter

import pytest

from lit_align.data.clean import (
    clean_records,
    detect_lang,
    normalize_record,
    normalize_text,
    record_hash,
    zh_ratio,
)


def sft(user, answer, **extra):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **extra}


def pair(prompt, chosen, rejected, **extra):
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **extra,
    }


CODE = "```python\ndef f(x):   \n\n\n\n\n    return x  \t\n```"


def test_normalize_text_keeps_code_blocks_byte_identical():
    text = f"  Intro   \r\n\r\n\r\n\r\n\r\nHere:\n{CODE}\nAfter  \n\n\n\n\nEnd  \n\n"
    out = normalize_text(text)
    assert CODE in out
    assert out == f"Intro\n\n\nHere:\n{CODE}\nAfter\n\n\nEnd"


def test_normalize_text_code_only_line_endings_change():
    block = "~~~\nfull width ＡＢＣ  \r\n\n\n\n\nend\n~~~"
    assert normalize_text(block) == "~~~\nfull width ＡＢＣ  \n\n\n\n\nend\n~~~"
    # An unclosed fence runs to the end of the text.
    assert normalize_text("x\n```\na  \n\n\n\n\nb") == "x\n```\na  \n\n\n\n\nb"
    # A longer opening fence is not closed by a shorter one.
    nested = "````\n```\nkeep   \n\n\n\n````\n\n\n\n\nout"
    assert normalize_text(nested) == "````\n```\nkeep   \n\n\n\n````\n\n\nout"


def test_nfkc_full_width():
    assert normalize_text("ＡＢＣ１２３") == "ABC123"
    # Chinese full-width punctuation stays; full-width Latin, digits and the ideographic space fold.
    assert normalize_text("你好，世界！（ＡＢ）　《书》：１２") == "你好，世界！（AB） 《书》：12"
    assert normalize_text("ＡＢ，", nfkc=False) == "ＡＢ，"


def test_normalize_record_touches_every_message():
    record = pair(" q ", "a\r\n", "ＡＢ", source="s", row=3)
    out = normalize_record(record)
    assert [m["content"] for m in out["prompt"] + out["chosen"] + out["rejected"]] == ["q", "a", "AB"]
    assert out["source"] == "s" and out["row"] == 3
    assert record["prompt"][0]["content"] == " q "  # the input is not modified


def test_record_hash_ignores_provenance_and_formatting():
    h = record_hash(sft("hi", "hello", source="a", row=1))
    assert h == record_hash(sft("hi  ", "hello\r\n", source="b", row=9, lang="en"))
    assert h != record_hash(sft("hi", "hello!"))
    assert len(h) == 64


def test_zh_ratio_hand_strings():
    assert zh_ratio("abc中文") == pytest.approx(2 / 5)
    assert zh_ratio("中文，123！") == 1.0  # punctuation and digits are ignored
    assert zh_ratio("hello world") == 0.0
    assert zh_ratio("123 ...") == 0.0
    assert zh_ratio("用Python写") == pytest.approx(2 / 8)
    assert zh_ratio("こんにちは") == 0.0  # kana are letters, not CJK ideographs


def test_detect_lang():
    assert detect_lang(sft("天空为什么是蓝色的？", "因为瑞利散射。")) == "zh"
    assert detect_lang(sft("Why is the sky blue?", "Rayleigh scattering.")) == "en"
    # Code and system prompts do not count.
    code_answer = sft(
        "写一个函数", "如下：\n```python\ndef add(first_number, second_number):\n    return first_number\n```"
    )
    assert detect_lang(code_answer) == "zh"
    system = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 5},
            *sft("你好", "你好！")["messages"],
        ]
    }
    assert detect_lang(system) == "zh"
    assert detect_lang(sft("ab", "中文"), threshold=0.5) == "zh"  # 2 / 4
    assert detect_lang(sft("abc", "中文"), threshold=0.5) == "en"  # 2 / 5


def test_clean_records_counts_every_drop():
    records = [
        sft("hi", "hello", source="s", row=0),
        sft("hi ", "hello\n", source="s", row=1),  # duplicate after normalisation
        sft("hi", "   ", source="s", row=2),  # empty answer
        pair("q", "same", "same ", source="s", row=3),
        pair("q", "good", "bad", source="s", row=4),
        sft("你好", "你好，很高兴见到你。", source="s", row=5),
        sft("hi", "hello", source="s", row=6),  # duplicate
    ]
    kept, dropped = clean_records(records)
    assert [r["row"] for r in kept] == [0, 4, 5]
    assert dropped == Counter({"duplicate": 2, "empty_turn": 1, "chosen_equals_rejected": 1})
    assert len(kept) + sum(dropped.values()) == len(records)
    assert [r["lang"] for r in kept] == ["en", "en", "zh"]
    assert list(kept[0]) == ["messages", "source", "lang", "row"]

    kept, dropped = clean_records(records, dedupe=False)
    assert len(kept) == 5 and "duplicate" not in dropped

    kept, dropped = clean_records(records, min_zh_ratio=0.5)
    assert [r["row"] for r in kept] == [5]
    assert dropped == Counter({"below_min_zh_ratio": 4, "empty_turn": 1, "chosen_equals_rejected": 1})
