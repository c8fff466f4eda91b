"""Generate the bilingual (English/Chinese) demo chats that the quickstart trains on.

The quickstart must run offline in minutes, so its data has to be small, shipped in the repo, and teach
something a ~1M-parameter model can visibly learn. Every fact below exists as a parallel English/Chinese
question-answer pair; that one design choice serves both recipes:

- SFT: the assistant always answers in the language of the user's last message, so the model learns
  ChatML framing plus two languages.
- DPO: the rejected answer is the *same* fact in the *other* language (and, for a small share, the right
  language with a wrong fact). Language is a signal a tiny model picks up within a few hundred steps, so
  `rewards/accuracies` rises visibly instead of hovering at chance.

The train/validation split is made on facts, not on rendered examples: each topic holds out some of its
items (numbers, countries...) for validation, so no validation question is ever seen in training. Topics
with few items stay train-only. Output is deterministic for a given `--seed`.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from itertools import product
from pathlib import Path

VAL_SHARE = 0.15
WRONG_FACT_SHARE = 0.1
SYSTEM_PROMPTS = {
    "en": ["You are a helpful assistant.", "You are a friendly assistant. Keep answers short.",
           "Answer the user's question in one sentence.", "Always reply in the same language as the user."],
    "zh": ["你是一个乐于助人的助手。", "你是一个友好的助手，回答要简短。", "请用一句话回答用户的问题。",
           "请始终使用与用户相同的语言回答。"],
}  # fmt: skip
NAMES = "Tom|汤姆; Anna|安娜; Lily|莉莉; Jack|杰克; Emma|艾玛; Lucy|露西; Xiaoming|小明; Li Hua|李华; Wang Fang|王芳"
# (name, English questions, Chinese questions, English answer, Chinese answer, rows "en_a|en_b|zh_a|zh_b; ...").
# Slot {b} is the answer; {A} is {a} capitalised.
TABLES = [
    ("capital", ["What is the capital of {a}?", "Which city is the capital of {a}?", "Name the capital of {a}."],
     ["{a}的首都是哪里？", "{a}的首都是哪座城市？", "请说出{a}的首都。"],
     "The capital of {a} is {b}.", "{a}的首都是{b}。",
     "France|Paris|法国|巴黎; Japan|Tokyo|日本|东京; China|Beijing|中国|北京; Germany|Berlin|德国|柏林; "
     "Italy|Rome|意大利|罗马; Spain|Madrid|西班牙|马德里; Egypt|Cairo|埃及|开罗; Russia|Moscow|俄罗斯|莫斯科; "
     "Canada|Ottawa|加拿大|渥太华; Australia|Canberra|澳大利亚|堪培拉; India|New Delhi|印度|新德里; "
     "the United Kingdom|London|英国|伦敦; South Korea|Seoul|韩国|首尔; Thailand|Bangkok|泰国|曼谷; "
     "Kenya|Nairobi|肯尼亚|内罗毕; Greece|Athens|希腊|雅典; "
     "Norway|Oslo|挪威|奥斯陆; Mexico|Mexico City|墨西哥|墨西哥城"),
    ("colour", ["What colour is {a}?", "What is the colour of {a}?"], ["{a}是什么颜色的？", "{a}通常是什么颜色？"],
     "{A} is {b}.", "{a}是{b}的。",
     "the sky|blue|天空|蓝色; grass|green|草|绿色; snow|white|雪|白色; a ripe banana|yellow|熟香蕉|黄色; "
     "coal|black|煤|黑色; a ripe tomato|red|熟西红柿|红色; milk|white|牛奶|白色; a carrot|orange|胡萝卜|橙色"),
    ("sound", ["What sound does {a} make?", "What does {a} say?"], ["{a}怎么叫？", "{a}的叫声是什么样的？"],
     "{A} says {b}.", "{a}的叫声是“{b}”。",
     "a dog|woof|狗|汪汪; a cat|meow|猫|喵喵; a cow|moo|牛|哞哞; a duck|quack|鸭子|嘎嘎; a sheep|baa|羊|咩咩; "
     "a frog|ribbit|青蛙|呱呱; a bee|buzz|蜜蜂|嗡嗡; a mouse|squeak|老鼠|吱吱; a snake|hiss|蛇|嘶嘶"),
    ("opposite", ["What is the opposite of \"{a}\"?", "Give me the opposite of \"{a}\"."],
     ["“{a}”的反义词是什么？", "请说出“{a}”的反义词。"],
     "The opposite of \"{a}\" is \"{b}\".", "“{a}”的反义词是“{b}”。",
     "hot|cold|热|冷; big|small|大|小; up|down|上|下; fast|slow|快|慢; happy|sad|高兴|难过; long|short|长|短; "
     "open|closed|开|关; day|night|白天|黑夜; early|late|早|晚; light|heavy|轻|重; old|new|旧|新; full|empty|满|空"),
    ("legs", ["How many legs does {a} have?"], ["{a}有几条腿？"], "{A} has {b} legs.", "{a}有{b}条腿。",
     "a spider|eight|蜘蛛|八; an ant|six|蚂蚁|六; a dog|four|狗|四; a chicken|two|鸡|两; a horse|four|马|四; "
     "a duck|two|鸭子|两; a bee|six|蜜蜂|六; a cat|four|猫|四"),
    ("sides", ["How many sides does {a} have?"], ["{a}有几条边？"], "{A} has {b} sides.", "{a}有{b}条边。",
     "a triangle|three|三角形|三; a square|four|正方形|四; a pentagon|five|五边形|五; a hexagon|six|六边形|六; "
     "an octagon|eight|八边形|八; a rectangle|four|长方形|四"),
    ("mix", ["What colour do you get if you mix {a}?"], ["{a}混在一起是什么颜色？"], "Mixing {a} gives {b}.",
     "{a}混在一起是{b}。", "blue and yellow|green|蓝色和黄色|绿色; red and white|pink|红色和白色|粉色; "
     "red and yellow|orange|红色和黄色|橙色; "
     "blue and red|purple|蓝色和红色|紫色; black and white|grey|黑色和白色|灰色"),
    ("language", ["What language do people speak in {a}?", "What is the main language of {a}?"],
     ["{a}的人说什么语言？", "{a}的主要语言是什么？"], "People in {a} speak {b}.", "{a}的人说{b}。",
     "France|French|法国|法语; Japan|Japanese|日本|日语; Germany|German|德国|德语; Spain|Spanish|西班牙|西班牙语; "
     "Italy|Italian|意大利|意大利语; Russia|Russian|俄罗斯|俄语; "
     "China|Chinese|中国|中文; Brazil|Portuguese|巴西|葡萄牙语; "
     "South Korea|Korean|韩国|韩语; Greece|Greek|希腊|希腊语; Thailand|Thai|泰国|泰语"),
    ("continent", ["Which continent is {a} in?", "On which continent is {a}?"], ["{a}在哪个洲？", "{a}位于哪个大洲？"],
     "{A} is in {b}.", "{a}在{b}。",
     "France|Europe|法国|欧洲; Japan|Asia|日本|亚洲; Egypt|Africa|埃及|非洲; Brazil|South America|巴西|南美洲; "
     "Canada|North America|加拿大|北美洲; India|Asia|印度|亚洲; Kenya|Africa|肯尼亚|非洲; Norway|Europe|挪威|欧洲; "
     "Argentina|South America|阿根廷|南美洲; Mexico|North America|墨西哥|北美洲; Thailand|Asia|泰国|亚洲"),
    ("food", ["What does {a} like to eat?", "What food does {a} eat?"], ["{a}喜欢吃什么？", "{a}吃什么食物？"],
     "{A} likes to eat {b}.", "{a}喜欢吃{b}。",
     "a panda|bamboo|熊猫|竹子; a rabbit|carrots|兔子|胡萝卜; a monkey|bananas|猴子|香蕉; a cat|fish|猫|鱼; "
     "a cow|grass|牛|草; a bee|nectar|蜜蜂|花蜜; "
     "a mouse|cheese|老鼠|奶酪; a dog|bones|狗|骨头; a koala|leaves|考拉|树叶"),
    ("home", ["Where does {a} live?"], ["{a}生活在哪里？"], "{A} lives {b}.", "{a}生活{b}。",
     "a fish|in water|鱼|在水里; a bird|in a nest|鸟|在鸟巢里; a bee|in a hive|蜜蜂|在蜂巢里; "
     "a camel|in the desert|骆驼|在沙漠里; a polar bear|in the Arctic|北极熊|在北极; "
     "a penguin|in Antarctica|企鹅|在南极"),
    ("define", ["What is {a}?", "Can you tell me what {a} is?"], ["{a}是什么？", "你能告诉我{a}是什么吗？"],
     "{A} is {b}.", "{a}是{b}。",
     "a doctor|a person who helps sick people get better|医生|帮助病人恢复健康的人; "
     "a teacher|a person who teaches students at school|老师|在学校教学生的人; "
     "a library|a place where you can borrow books|图书馆|可以借书的地方; "
     "a kitchen|a room where people cook food|厨房|做饭的房间; "
     "an umbrella|something that keeps you dry in the rain|雨伞|下雨时让你不被淋湿的东西; "
     "a clock|a device that shows the time|时钟|显示时间的工具; a pilot|a person who flies planes|飞行员|驾驶飞机的人; "
     "a map|a picture that shows where places are|地图|显示地方位置的图; "
     "a refrigerator|a machine that keeps food cold|冰箱|让食物保持低温的机器; "
     "a farmer|a person who grows crops and raises animals|农民|种庄稼和养动物的人"),
    ("greet", ["{a}"], ["{a}"], "{b}", "{b}",
     "Hello!|Hello! How can I help you today?|你好！|你好！有什么可以帮你的吗？; "
     "Thank you!|You're welcome!|谢谢！|不客气！; "
     "Who are you?|I am a small assistant that answers simple questions.|你是谁？|我是一个回答简单问题的小助手。; "
     "Good morning!|Good morning! I hope you have a great day.|早上好！|早上好！祝你今天愉快。; "
     "Goodbye!|Goodbye! Have a nice day.|再见！|再见！祝你有美好的一天。"),
    ("trivia", ["{a}"], ["{a}"], "{b}", "{b}",
     "How many days are in a week?|There are seven days in a week.|一周有几天？|一周有七天。; "
     "How many months are in a year?|There are twelve months in a year.|一年有几个月？|一年有十二个月。; "
     "At what temperature does water freeze?|Water freezes at 0 degrees Celsius.|水在多少度结冰？|水在0摄氏度结冰。; "
     "At what temperature does water boil?|Water boils at 100 degrees Celsius.|水在多少度沸腾？|水在100摄氏度沸腾。; "
     "Which planet is known as the Red Planet?|Mars is known as the Red Planet."
     "|哪颗行星被称为红色星球？|火星被称为红色星球。; "
     "What is the largest planet in our solar system?|Jupiter is the largest planet."
     "|太阳系最大的行星是哪颗？|木星是最大的行星。; "
     "Where does the sun rise?|The sun rises in the east.|太阳从哪边升起？|太阳从东边升起。; "
     "What is the largest ocean?|The Pacific Ocean is the largest ocean.|最大的海洋是哪个？|太平洋是最大的海洋。; "
     "What do bees make?|Bees make honey.|蜜蜂会酿造什么？|蜜蜂会酿造蜂蜜。; "
     "What is frozen water called?|Frozen water is called ice.|结冰的水叫什么？|结冰的水叫冰。; "
     "What is the tallest animal?|The giraffe is the tallest animal.|最高的动物是什么？|长颈鹿是最高的动物。; "
     "How many colours are in a rainbow?|A rainbow has seven colours.|彩虹有几种颜色？|彩虹有七种颜色。"),
]  # fmt: skip
DAYS = "Monday|星期一; Tuesday|星期二; Wednesday|星期三; Thursday|星期四; Friday|星期五; Saturday|星期六; Sunday|星期日"
MONTHS = (
    "January February March April May June July August September October November December",
    "一二三四五六七八九十",
)
SEASONS = "spring|春天; summer|夏天; autumn|秋天; winter|冬天"
UNITS = "metres|centimetres|米|厘米|100; hours|minutes|小时|分钟|60; days|hours|天|小时|24; kilograms|grams|千克|克|1000; weeks|days|周|天|7"  # noqa: E501
FRUITS = "apple|苹果; banana|香蕉; pear|梨; orange|橙子; grape|葡萄; peach|桃子; mango|芒果; cherry|樱桃"


@dataclass(frozen=True)
class Fact:
    """One question/answer pair in both languages, plus a same-language wrong answer for DPO."""

    questions: dict[str, list[str]]
    answer: dict[str, str]
    wrong: dict[str, str]


def _pairs(spec: str) -> list[list[str]]:
    return [row.strip().split("|") for row in spec.split(";")]


def _fill(template: str, slots: dict, b: object = None) -> str:
    slots = {**slots, "b": slots["b"] if b is None else b}
    if "a" in slots:
        slots["A"] = str(slots["a"])[:1].upper() + str(slots["a"])[1:]
    return template.format(**slots)


def _topic(en_qs, zh_qs, en_a, zh_a, rows: list[tuple[dict, dict]], rng: random.Random) -> list[Fact]:
    """Render every row once; the wrong answer swaps in slot `b` from another row with a different answer."""
    facts, seen = [], set()
    for en, zh in rows:
        if (key := json.dumps([en, zh], ensure_ascii=False, sort_keys=True)) in seen:
            continue
        seen.add(key)
        others = [r for r in rows if r[0]["b"] != en["b"]]
        wrong_en, wrong_zh = rng.choice(others) if others else ({"b": "?"}, {"b": "?"})
        facts.append(Fact(
            questions={"en": [_fill(q, en) for q in en_qs], "zh": [_fill(q, zh) for q in zh_qs]},
            answer={"en": _fill(en_a, en), "zh": _fill(zh_a, zh)},
            wrong={"en": _fill(en_a, en, wrong_en["b"]), "zh": _fill(zh_a, zh, wrong_zh["b"])},
        ))  # fmt: skip
    return facts


def _same(rows: list[dict]) -> list[tuple[dict, dict]]:
    return [(r, r) for r in rows]


def _templated_topics(rng: random.Random) -> dict[str, list[Fact]]:
    """Number-driven topics: hundreds of distinct items each, so they dominate the held-out validation facts."""
    n = range(1, 51)
    days, seasons, names = _pairs(DAYS), _pairs(SEASONS), _pairs(NAMES)
    months = list(zip(MONTHS[0].split(), [f"{c}月" for c in MONTHS[1]] + ["十一月", "十二月"], strict=True))
    fruits = _pairs(FRUITS)
    lists = [rng.sample(fruits, rng.randint(2, 5)) for _ in range(300)]
    sortable = [rng.sample(range(1, 100), 3) for _ in range(400)]
    t = {
        "add": (["What is {a} plus {c}?", "What is {a} + {c}?", "Calculate {a} + {c}."],
                ["{a}加{c}等于多少？", "{a} + {c} 等于几？", "请计算{a}加{c}。"], "{a} plus {c} equals {b}.",
                "{a}加{c}等于{b}。", _same([{"a": a, "c": c, "b": a + c} for a, c in product(n, n)])),
        "sub": (["What is {a} minus {c}?", "What is {a} - {c}?"], ["{a}减{c}等于多少？", "{a} - {c} 等于几？"],
                "{a} minus {c} equals {b}.", "{a}减{c}等于{b}。",
                _same([{"a": a, "c": c, "b": a - c} for a, c in product(range(1, 61), n) if a >= c])),
        "mul": (["What is {a} times {c}?", "What is {a} × {c}?"], ["{a}乘以{c}等于多少？", "{a} × {c} 等于几？"],
                "{a} times {c} equals {b}.", "{a}乘以{c}等于{b}。",
                _same([{"a": a, "c": c, "b": a * c} for a, c in product(range(2, 13), range(2, 13))])),
        "next": (["What number comes after {a}?"], ["{a}后面是哪个数？"], "The number after {a} is {b}.",
                 "{a}后面是{b}。", _same([{"a": a, "b": a + 1} for a in range(1, 500)])),
        "parity": (["Is {a} even or odd?"], ["{a}是奇数还是偶数？"], "{a} is {b}.", "{a}是{b}。",
                   [({"a": a, "b": ["even", "odd"][a % 2]}, {"a": a, "b": ["偶数", "奇数"][a % 2]})
                    for a in range(1, 300)]),
        "double": (["What is double {a}?", "What is twice {a}?"], ["{a}的两倍是多少？"], "Double {a} is {b}.",
                   "{a}的两倍是{b}。", _same([{"a": a, "b": 2 * a} for a in range(1, 200)])),
        "bigger": (["Which is bigger, {a} or {c}?"], ["{a}和{c}哪个大？"], "{b} is bigger than {d}.", "{b}比{d}大。",
                   _same([{"a": a, "c": c, "b": max(a, c), "d": min(a, c)} for a, c in product(n, n) if a != c])),
        "sort": (["Sort these numbers from smallest to largest: {a}, {c}, {d}."],
                 ["把这些数字从小到大排列：{a}、{c}、{d}。"],
                 "From smallest to largest: {b}.", "从小到大是：{b}。",
                 [({"a": a, "c": c, "d": d, "b": ", ".join(map(str, sorted((a, c, d))))},
                   {"a": a, "c": c, "d": d, "b": "、".join(map(str, sorted((a, c, d))))}) for a, c, d in sortable]),
        "units": (["How many {c} are in {a} {d}?"], ["{a}{d}等于多少{c}？"], "{a} {d} is {b} {c}.",
                  "{a}{d}等于{b}{c}。",
                  [({"a": k, "d": big, "c": small, "b": k * int(f)}, {"a": k, "d": zb, "c": zs, "b": k * int(f)})
                   for big, small, zb, zs, f in _pairs(UNITS) for k in range(2, 21)]),
        "clock": (["It is {a} o'clock now. What time will it be in {c} hours?"], ["现在是{a}点，{c}小时后是几点？"],
                  "In {c} hours it will be {b} o'clock.", "{c}小时后是{b}点。",
                  _same([{"a": h, "c": k, "b": (h + k - 1) % 12 + 1} for h, k in product(range(1, 13), range(1, 12))])),
        "apples": (["{a} has {c} apples and eats {d}. How many apples are left?"],
                   ["{a}有{c}个苹果，吃了{d}个，还剩几个？"],
                   "{a} has {b} apples left.", "{a}还剩{b}个苹果。",
                   [({"a": en, "c": c, "d": d, "b": c - d}, {"a": zh, "c": c, "d": d, "b": c - d})
                    for (en, zh), c, d in product(names, range(3, 21), range(1, 10)) if d < c]),
        "age": (["{a} is {c} years old. How old will {a} be in {d} years?"], ["{a}今年{c}岁，{d}年后{a}几岁？"],
                "{a} will be {b} years old.", "{d}年后{a}{b}岁。",
                [({"a": en, "c": c, "d": d, "b": c + d}, {"a": zh, "c": c, "d": d, "b": c + d})
                 for (en, zh), c, d in product(names, range(5, 40), range(2, 10))]),
        "intro": (["My name is {a}.", "Hi, I'm {a}."], ["我叫{a}。", "你好，我是{a}。"], "Nice to meet you, {b}!",
                  "很高兴认识你，{b}！", [({"a": en, "b": en}, {"a": zh, "b": zh}) for en, zh in names]),
        "fruits": (["How many fruits are in this list: {a}?"], ["这个列表里有几种水果：{a}？"],
                   "There are {b} fruits in the list.", "列表里有{b}种水果。",
                   [({"a": ", ".join(f[0] for f in fl), "b": len(fl)}, {"a": "、".join(f[1] for f in fl), "b": len(fl)})
                    for fl in lists]),
    }  # fmt: skip
    for name, seq, en_q, zh_q, en_a, zh_a in [
        ("day_after", days, "What day comes after {a}?", "{a}的后一天是星期几？",
         "The day after {a} is {b}.", "{a}的后一天是{b}。"),
        ("day_before", days[::-1], "What day comes before {a}?", "{a}的前一天是星期几？", "The day before {a} is {b}.",
         "{a}的前一天是{b}。"),
        ("month_after", months, "What month comes after {a}?", "{a}之后是几月？",
         "The month after {a} is {b}.", "{a}之后是{b}。"),
        ("season_after", seasons, "Which season comes after {a}?", "{a}之后是什么季节？", "After {a} comes {b}.",
         "{a}之后是{b}。"),
    ]:  # fmt: skip
        rows = [({"a": x[0], "b": y[0]}, {"a": x[1], "b": y[1]}) for x, y in zip(seq, seq[1:] + seq[:1], strict=True)]
        t[name] = ([en_q], [zh_q], en_a, zh_a, rows)
    return {name: _topic(*spec, rng) for name, spec in t.items()}


def build_bank(seed: int) -> dict[str, list[Fact]]:
    """All facts by topic, in a deterministic order."""
    rng = random.Random(seed)
    bank = {}
    for name, en_qs, zh_qs, en_a, zh_a, spec in TABLES:
        rows = [({"a": r[0], "b": r[1]}, {"a": r[2], "b": r[3]}) for r in _pairs(spec)]
        if name == "opposite":
            rows += [({"a": en["b"], "b": en["a"]}, {"a": zh["b"], "b": zh["a"]}) for en, zh in rows]
        bank[name] = _topic(en_qs, zh_qs, en_a, zh_a, rows, rng)
    bank.update(_templated_topics(rng))
    return bank


def split_bank(bank: dict[str, list[Fact]], seed: int) -> dict[str, dict[str, list[Fact]]]:
    """Hold out VAL_SHARE of each topic's facts for validation; topics with fewer than 8 facts stay train-only."""
    splits: dict[str, dict[str, list[Fact]]] = {"train": {}, "val": {}}
    for name, facts in bank.items():
        facts = facts[:]
        random.Random(f"{seed}-{name}").shuffle(facts)
        n_val = round(VAL_SHARE * len(facts)) if len(facts) >= 8 else 0
        splits["val"][name], splits["train"][name] = facts[:n_val], facts[n_val:]
    return {s: {k: v for k, v in topics.items() if v} for s, topics in splits.items()}


def _other(lang: str) -> str:
    return "zh" if lang == "en" else "en"


def _dialogue(rng: random.Random, topics: dict[str, list[Fact]]) -> tuple[list[dict], Fact, str]:
    """Messages before the final answer (ending with a user turn), the final fact, and the final user's language."""
    names = list(topics)
    weights = [min(len(topics[n]), 20) for n in names]
    lang = rng.choice(["en", "zh"])
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS[rng.choice(["en", "zh"])])})
    n_turns = rng.choices([1, 2, 3], weights=[0.6, 0.25, 0.15])[0]
    for turn in range(n_turns):
        fact = rng.choice(topics[rng.choices(names, weights=weights)[0]])
        turn_lang = _other(lang) if turn < n_turns - 1 and rng.random() < 0.15 else lang
        messages.append({"role": "user", "content": rng.choice(fact.questions[turn_lang])})
        if turn < n_turns - 1:
            messages.append({"role": "assistant", "content": fact.answer[turn_lang]})
    return messages, fact, lang


def make_split(topics: dict[str, list[Fact]], kind: str, n: int, rng: random.Random, seen: set[str]) -> list[dict]:
    """`n` records of `kind` ("sft" or "dpo") whose prompt text is not in `seen` (updated in place)."""
    records: list[dict] = []
    for _ in range(200 * n):
        if len(records) == n:
            return records
        prompt, fact, lang = _dialogue(rng, topics)
        key = json.dumps(prompt, ensure_ascii=False)
        if key in seen:
            continue
        seen.add(key)
        chosen = {"role": "assistant", "content": fact.answer[lang]}
        if kind == "sft":
            records.append({"messages": [*prompt, chosen]})
            continue
        wrong = fact.wrong[lang] if rng.random() < WRONG_FACT_SHARE else fact.answer[_other(lang)]
        records.append({"prompt": prompt, "chosen": [chosen], "rejected": [{"role": "assistant", "content": wrong}]})
    raise RuntimeError(f"could only make {len(records)} distinct {kind} records out of {n}")


def _is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _user_texts(records: list[dict]) -> set[str]:
    return {m["content"] for r in records for m in r.get("messages") or r["prompt"] if m["role"] == "user"}


def _summary(path: Path, records: list[dict]) -> str:
    prompts = [r.get("prompt") or r["messages"][:-1] for r in records]
    zh = sum(_is_chinese(p[-1]["content"]) for p in prompts) / len(records)
    multi = sum(sum(m["role"] == "user" for m in p) > 1 for p in prompts) / len(records)
    system = sum(p[0]["role"] == "system" for p in prompts) / len(records)
    shares = f"en {1 - zh:.0%} / zh {zh:.0%}, multi-turn {multi:.0%}, system {system:.0%}"
    return f"{path.name}: {len(records)} records, {shares}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("assets/demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sizes", type=int, nargs=4, default=[2000, 200, 2000, 200], help="SFT train/val, DPO train/val counts"
    )
    args = parser.parse_args(argv)
    splits = split_bank(build_bank(args.seed), args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for kind, (n_train, n_val) in (("sft", args.sizes[:2]), ("dpo", args.sizes[2:])):
        val_seen: set[str] = set()
        val = make_split(splits["val"], kind, n_val, rng, val_seen)
        train = make_split(splits["train"], kind, n_train, rng, set(val_seen))
        leaked = _user_texts(val) & _user_texts(train)
        assert not leaked, f"validation questions seen in training: {sorted(leaked)[:3]}"
        for split, records in (("train", train), ("val", val)):
            path = args.output / f"{kind}_{split}.jsonl"
            with path.open("w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            print(_summary(path, records))


if __name__ == "__main__":
    main()
