"""Turn chat messages into token ids and labels with the tokenizer's own chat template.

Which tokens are the assistant's is found from the rendered text, not from template-specific markers:
for every assistant turn, the text of the conversation up to that turn (with the generation prompt) must be a
prefix of the text including it; the characters in between are the turn. One tokenisation of the whole
conversation with offsets then labels exactly the tokens that start inside those spans. This works with any
chat template that renders conversations prefix-consistently (ChatML/Qwen, Llama 3, Mistral, Gemma, ...),
needs no ``{% generation %}`` tags, and is immune to BPE merges across turn boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

from lit_align.constants import IGNORE_INDEX


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    full_length: int | None = None
    """Length before truncation (None: not truncated, so ``len(input_ids)``)."""

    @property
    def untruncated_length(self) -> int:
        return len(self.input_ids) if self.full_length is None else self.full_length

    @property
    def n_label_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict], first_labelled: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of assistant turns at index ``>= first_labelled``.

    A span runs from the end of the generation prompt to the end of the turn, so it includes the template's
    end-of-turn token: the model learns to stop.
    """
    text = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < first_labelled:
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1])
        if not (text.startswith(through) and through.startswith(before)):
            raise ValueError(
                "the tokenizer's chat template does not render conversations prefix-consistently (turn "
                f"{i} changes how earlier turns look), so assistant tokens cannot be located. Use a template "
                "that renders each turn independently of later ones."
            )
        spans.append((len(before), len(through)))
    return text, spans


def tokenize_conversation(tokenizer, messages: list[dict], first_labelled: int = 0) -> Tokenized:
    """Token ids of the whole conversation; labels on assistant turns from ``first_labelled`` on, -100 elsewhere."""
    text, spans = assistant_spans(tokenizer, messages, first_labelled)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    span_index = 0
    for t, (start, _end) in enumerate(encoding["offset_mapping"]):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index < len(spans) and spans[span_index][0] <= start:
            labels[t] = input_ids[t]
    return Tokenized(input_ids, labels)


def tokenize_sft(tokenizer, messages: list[dict], max_length: int) -> Tokenized:
    """An SFT example: every assistant turn learned, cut from the right at ``max_length``."""
    out = tokenize_conversation(tokenizer, messages)
    if len(out.input_ids) > max_length:
        out = Tokenized(out.input_ids[:max_length], out.labels[:max_length], True, len(out.input_ids))
    return out


def tokenize_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a prompt as the model sees it before it answers: the chat template with the generation prompt
    (the assistant turn's opening), no special tokens added (the template holds the ones it wants)."""
    text = _render(tokenizer, messages, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _fit_pair_side(seq: Tokenized, max_length: int, max_prompt_length: int) -> Tokenized:
    """Drop prompt tokens from the start down to ``max_prompt_length``, then completion tokens from the end."""
    if len(seq.input_ids) <= max_length:
        return seq
    prompt_len = next((i for i, label in enumerate(seq.labels) if label != IGNORE_INDEX), len(seq.labels))
    cut = max(0, min(prompt_len - max_prompt_length, len(seq.input_ids) - max_length))
    ids, labels = seq.input_ids[cut:][:max_length], seq.labels[cut:][:max_length]
    return Tokenized(ids, labels, True, len(seq.input_ids))


def tokenize_preference(
    tokenizer,
    prompt: list[dict],
    chosen: list[dict],
    rejected: list[dict],
    max_length: int,
    max_prompt_length: int | None = None,
) -> tuple[Tokenized, Tokenized]:
    """Chosen and rejected sequences (prompt + completion); labels on the completion only.

    When a side is longer than ``max_length``, the prompt first loses tokens from its start (the end of the
    prompt, nearest the answer, matters most) down to ``max_prompt_length`` (default ``max_length // 2``),
    then the completion loses tokens from its end.
    """
    limit = max_length // 2 if max_prompt_length is None else max_prompt_length
    sides = []
    for completion in (chosen, rejected):
        seq = tokenize_conversation(tokenizer, prompt + completion, first_labelled=len(prompt))
        sides.append(_fit_pair_side(seq, max_length, limit))
    return sides[0], sides[1]
