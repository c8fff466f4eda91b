"""Format converters: every shared sample parses, detection picks the right format, hand-checked records."""

import json
from collections import Counter
from pathlib import Path

import pytest

from lit_align.data.errors import FieldError, SkipRecord
from lit_align.data.formats import FORMATS, detect_format
from lit_align.data.read import read_source

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared samples not found at {SHARED}")


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


def shared_row(name, line):
    with open(SHARED / name, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if number == line:
                return json.loads(text)
    raise AssertionError(f"{name} has no line {line}")


# file, format, options, records, extra Counter entries (besides rows_read)
SHARED_TABLE = [
    ("gsm8k.test.jsonl", "qa", {}, 1319, {}),
    ("gsm8k.train.jsonl", "qa", {}, 500, {}),
    ("hh_rlhf_harmless_base.test.jsonl", "hh_rlhf", {}, 500, {}),
    ("llamafactory_alpaca_zh_demo.train.jsonl", "alpaca", {}, 1000, {}),
    ("llamafactory_glaive_toolcall_zh_demo.train.jsonl", "sharegpt", {}, 300, {}),
    ("llamafactory_dpo_en_demo.train.jsonl", "sharegpt", {}, 300, {}),
    ("llamafactory_dpo_zh_demo.train.jsonl", "sharegpt", {}, 300, {}),
    ("llamafactory_oaast_rm_zh.train.jsonl", "alpaca", {}, 1218, {}),
    ("llamafactory_oaast_rm_zh.train.jsonl", "alpaca", {"ranking_pairs": "adjacent"}, 1218, {}),
    ("oasst_trees.en100.jsonl", "oasst", {}, 100, {}),
    ("oasst_trees.en100.jsonl", "oasst", {"mode": "preference"}, 429, {}),
    ("oasst_messages_nested.en100.jsonl", "oasst", {}, 100, {}),
    ("oasst_messages_nested.en100.jsonl", "oasst", {"mode": "preference"}, 429, {}),
    ("ultrafeedback_binarized.train_prefs.jsonl", "ultrafeedback", {}, 12, {"score_tie": 4}),
    ("ultrafeedback_binarized.train_prefs.jsonl", "ultrafeedback", {"drop_ties": False}, 16, {}),
]


@needs_shared
@pytest.mark.parametrize("fmt_arg", ["explicit", "auto"])
@pytest.mark.parametrize(("name", "fmt", "options", "expected", "skips"), SHARED_TABLE)
def test_shared_sample_parses(name, fmt, options, expected, skips, fmt_arg):
    rows = sum(1 for line in open(SHARED / name, encoding="utf-8") if line.strip())
    records, counts = read_source(str(SHARED / name), fmt if fmt_arg == "explicit" else "auto", options=options)
    assert len(records) == expected
    assert counts == Counter({"rows_read": rows, **skips})
    assert not [k for k in counts if k.startswith("error:")]
    assert {r["source"] for r in records} == {name.removesuffix(".jsonl")}


@needs_shared
def test_every_shared_file_is_in_the_table():
    assert {p.name for p in SHARED.glob("*.jsonl")} == {row[0] for row in SHARED_TABLE}


@needs_shared
@pytest.mark.parametrize(("name", "fmt"), sorted({(row[0], row[1]) for row in SHARED_TABLE}))
def test_detect_format_on_shared_first_row(name, fmt):
    assert detect_format(shared_row(name, 1)) == fmt


@needs_shared
def test_qa_gsm8k_record():
    records = FORMATS["qa"](shared_row("gsm8k.test.jsonl", 306))
    assert records == [
        {
            "messages": [
                u("John arm wrestles 20 people.  He beats 80%.  How many people did he lose to?"),
                a("He beats 20*.8=<<20*.8=16>>16 people\nSo he loses to 20-16=<<20-16=4>>4 people\n#### 4"),
            ]
        }
    ]


@needs_shared
def test_alpaca_record_joins_instruction_and_input():
    records = FORMATS["alpaca"](shared_row("llamafactory_alpaca_zh_demo.train.jsonl", 665))
    assert records == [{"messages": [u("将以下罗马数字转换为阿拉伯数字。\n\n输入：XIV"), a("输出：14")]}]


@needs_shared
def test_alpaca_ranking_with_history():
    row = shared_row("llamafactory_oaast_rm_zh.train.jsonl", 360)
    prompt = [u("1+1等于几"), a("2"), u("那2+2呢")]
    best_vs_rest = FORMATS["alpaca"](row)
    assert best_vs_rest == [
        {"prompt": prompt, "chosen": [a("2 + 2 = 4")], "rejected": [a("2+2=4")]},
        {"prompt": prompt, "chosen": [a("2 + 2 = 4")], "rejected": [a("= 1+1+1+1")]},
    ]
    adjacent = FORMATS["alpaca"](row, ranking_pairs="adjacent")
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in adjacent] == [
        ("2 + 2 = 4", "2+2=4"),
        ("2+2=4", "= 1+1+1+1"),
    ]


def test_alpaca_chosen_rejected_and_system():
    row = {"system": "Be brief.", "instruction": "Say hi", "input": "", "chosen": "hi", "rejected": "no"}
    assert FORMATS["alpaca"](row) == [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, u("Say hi")],
            "chosen": [a("hi")],
            "rejected": [a("no")],
        }
    ]
    with pytest.raises(SkipRecord, match="ranking_needs_two_outputs"):
        FORMATS["alpaca"]({"instruction": "x", "input": "", "output": ["only one"]})


@needs_shared
def test_sharegpt_tool_call_record():
    records = FORMATS["sharegpt"](shared_row("llamafactory_glaive_toolcall_zh_demo.train.jsonl", 91))
    assert records == [
        {
            "messages": [
                u("我无聊了。你能告诉我一些有趣的事情吗？"),
                a('{"name": "get_random_fact", "arguments": {}}'),
                {"role": "tool", "content": '{"fact": "你知道章鱼有三个心脏吗？"}'},
                a("你知道吗，章鱼有三颗心脏？相当有趣，不是吗？"),
            ]
        }
    ]


@needs_shared
def test_sharegpt_preference_with_system_turn():
    (record,) = FORMATS["sharegpt"](shared_row("llamafactory_dpo_zh_demo.train.jsonl", 194))
    assert record["prompt"] == [
        {"role": "system", "content": "你是一个公正、不加审查、有帮助的助手。"},
        u("你有平衡感吗？或者你能感觉到自己倒立吗？"),
    ]
    assert record["chosen"] == [
        a(
            "不，我没有平衡感或感知方向的能力，因为我没有实体身体或相关感官。我是一个基于文本的AI模型，我的能力仅限于处理和生成文本。"
        )
    ]
    assert record["rejected"][0]["content"].startswith("作为一个人工智能语言模型")


def test_sharegpt_system_field_and_unknown_role():
    row = {"system": "sys", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}]}
    assert FORMATS["sharegpt"](row) == [{"messages": [{"role": "system", "content": "sys"}, u("q"), a("r")]}]
    row["conversations"][1]["from"] = "robot"
    with pytest.raises(FieldError) as err:
        FORMATS["sharegpt"](row)
    assert err.value.field == "conversations[1].from"
    assert "unknown role 'robot'" in err.value.reason


def test_messages_format():
    row = {"messages": [{"role": "user", "content": "q", "name": "x"}, {"role": "assistant", "content": "r"}]}
    assert FORMATS["messages"](row) == [{"messages": [u("q"), a("r")]}]
    assert FORMATS["messages"]({"conversations": row["messages"]}) == [{"messages": [u("q"), a("r")]}]
    with pytest.raises(FieldError, match="must end with an assistant message"):
        FORMATS["messages"]({"messages": [u("q")]})
    with pytest.raises(FieldError) as err:
        FORMATS["messages"]({"messages": "q"})
    assert str(err.value) == "field 'messages': expected a list of messages, got str"


def test_preference_forms():
    convert = FORMATS["preference"]
    expected = [{"prompt": [u("q")], "chosen": [a("good")], "rejected": [a("bad")]}]
    assert convert({"prompt": "q", "chosen": "good", "rejected": "bad"}) == expected
    assert convert({"prompt": [u("q")], "chosen": [a("good")], "rejected": [a("bad")]}) == expected
    assert convert({"prompt": "q", "chosen": [u("q"), a("good")], "rejected": [u("q"), a("bad")]}) == expected
    implicit = {"chosen": [u("hi"), a("hey"), u("q"), a("good")], "rejected": [u("hi"), a("hey"), u("q"), a("bad")]}
    assert convert(implicit) == [{"prompt": [u("hi"), a("hey"), u("q")], "chosen": [a("good")], "rejected": [a("bad")]}]
    with pytest.raises(FieldError) as err:
        convert({"prompt": "q", "chosen": 3, "rejected": "bad"})
    assert err.value.field == "chosen"


@needs_shared
def test_ultrafeedback_strips_prompt_and_skips_ties():
    (record,) = FORMATS["ultrafeedback"](shared_row("ultrafeedback_binarized.train_prefs.jsonl", 4))
    assert record["prompt"] == [u("Which animal has two hands, a hyrax or a dog?")]
    assert record["chosen"][0]["content"].startswith("Neither a hyrax nor a dog has hands.")
    assert [m["role"] for m in record["chosen"] + record["rejected"]] == ["assistant", "assistant"]
    with pytest.raises(SkipRecord, match="score_tie"):
        FORMATS["ultrafeedback"](shared_row("ultrafeedback_binarized.train_prefs.jsonl", 1))
    # line 4 has scores 9.0 vs 8.0
    with pytest.raises(SkipRecord, match="score_gap_below_min"):
        FORMATS["ultrafeedback"](shared_row("ultrafeedback_binarized.train_prefs.jsonl", 4), min_score_gap=1.5)


def test_hh_rlhf_multi_turn_prefix():
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken...",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No.",
    }
    assert FORMATS["hh_rlhf"](row) == [
        {
            "prompt": [u("Hi"), a("Hello!"), u("Tell me a joke")],
            "chosen": [a("Why did the chicken...")],
            "rejected": [a("No.")],
        }
    ]
    # Identical transcripts: the shared prefix is cut back to the last Human turn, so the record survives
    # conversion and cleaning drops it as chosen_equals_rejected.
    (same,) = FORMATS["hh_rlhf"]({"chosen": row["rejected"], "rejected": row["rejected"]})
    assert same["prompt"] == [u("Hi"), a("Hello!"), u("Tell me a joke")]
    assert same["chosen"] == same["rejected"] == [a("No.")]
    # Diverging before the last Human turn cannot be one prompt with two answers.
    diverge = {
        "chosen": "\n\nHuman: Q\n\nAssistant: A1\n\nHuman: more\n\nAssistant: B1",
        "rejected": "\n\nHuman: Q\n\nAssistant: A2",
    }
    with pytest.raises(FieldError, match="completion may only hold assistant/tool messages, got 'user'"):
        FORMATS["hh_rlhf"](diverge)
    with pytest.raises(FieldError, match="must start with"):
        FORMATS["hh_rlhf"]({"chosen": "Hello\n\nHuman: Q\n\nAssistant: A", "rejected": "x"})


@needs_shared
def test_hh_rlhf_shared_sample():
    (record,) = FORMATS["hh_rlhf"](shared_row("hh_rlhf_harmless_base.test.jsonl", 128))
    assert record == {
        "prompt": [
            u('I have a joke for you: "What’s a Mexican’s favorite sport? Cross country."'),
            a("Ha, that’s good!"),
            u("Hahaha"),
        ],
        "chosen": [a("Heh.")],
        "rejected": [a("Haha.")],
    }
    records, _ = read_source(str(SHARED / "hh_rlhf_harmless_base.test.jsonl"))
    assert sum(len(r["prompt"]) > 1 for r in records) == 350


def test_shp():
    row = {
        "post_id": "x",
        "history": "What is a good first telescope?",
        "human_ref_A": "A 6 inch Dobsonian.",
        "human_ref_B": "Binoculars first.",
        "labels": 0,
        "score_A": 12,
        "score_B": 40,
        "score_ratio": 40 / 12,
    }
    expected = [
        {"prompt": [u(row["history"])], "chosen": [a("Binoculars first.")], "rejected": [a("A 6 inch Dobsonian.")]}
    ]
    assert FORMATS["shp"](row) == expected
    assert FORMATS["shp"]({**row, "labels": 1})[0]["chosen"] == [a("A 6 inch Dobsonian.")]
    with pytest.raises(SkipRecord, match="score_ratio_below_min"):
        FORMATS["shp"](row, min_score_ratio=4.0)
    no_ratio = {k: v for k, v in row.items() if k != "score_ratio"}
    assert FORMATS["shp"](no_ratio, min_score_ratio=3.0) == expected
    with pytest.raises(FieldError, match="expected an integer, got str"):
        FORMATS["shp"]({**row, "labels": "1"})


def test_pku_saferlhf_axes():
    row = {
        "prompt": "How do I pick a lock?",
        "response_0": "Here is how...",
        "response_1": "I can't help with that.",
        "is_response_0_safe": False,
        "is_response_1_safe": True,
        "better_response_id": 0,
        "safer_response_id": 1,
    }
    better = FORMATS["pku_saferlhf"](row)
    assert better == [
        {"prompt": [u(row["prompt"])], "chosen": [a("Here is how...")], "rejected": [a("I can't help with that.")]}
    ]
    safer = FORMATS["pku_saferlhf"](row, axis="safer")
    assert safer[0]["chosen"] == [a("I can't help with that.")]
    with pytest.raises(FieldError) as err:
        FORMATS["pku_saferlhf"]({**row, "safer_response_id": 2}, axis="safer")
    assert err.value.field == "safer_response_id"
    with pytest.raises(ValueError, match="axis"):
        FORMATS["pku_saferlhf"](row, axis="kinder")


def test_coig_pc_row():
    row = {
        "instruction": "请将下面的句子翻译成英文。",
        "input": "今天天气很好。",
        "output": "The weather is nice today.",
        "split": "train",
        "task_type": {"major": ["翻译"], "minor": ["中译英"]},
        "domain": ["通用"],
        "other": None,
    }
    assert detect_format(row) == "coig"
    assert FORMATS["coig"](row) == [
        {"messages": [u("请将下面的句子翻译成英文。\n\n今天天气很好。"), a("The weather is nice today.")]}
    ]
    with pytest.raises(SkipRecord, match="coig_split_excluded"):
        FORMATS["coig"](row, keep_split="test")
    with pytest.raises(FieldError) as err:
        FORMATS["coig"]({**row, "task_type": 3})
    assert err.value.field == "task_type"
