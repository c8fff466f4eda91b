"""One cleaned record to one tokenised example: the chat template, the labels, and the guided copy of a pair.

Split from `lit_align.data.prepare` (the pipeline over sources) because this is the per-record step every source
goes through, and the one a new task (packing, a new record kind) changes.

Task ``prompt`` (GRPO, expert iteration) tokenises only the prompt, as the model will see it before answering, and
never cuts one: a question cut short has no verifiable answer, so a prompt over ``max_length`` is dropped.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from lit_align.checks import ConfigError
from lit_align.constants import IGNORE_INDEX
from lit_align.data.formats.prompt import PREFERENCE_REASON, from_conversation
from lit_align.data.tokenize import (
    Tokenized,
    tokenize_conversation,
    tokenize_preference,
    tokenize_prompt,
    tokenize_sft,
)

if TYPE_CHECKING:
    from lit_align.data.prepare import PrepareSettings


def tokenize_record(
    record: dict, tokenizer, settings: PrepareSettings, counts: Counter, truncated_lengths: list[int] | None = None
) -> dict | None:
    """Token ids and labels of one record for ``settings.task`` (``sft`` or ``preference``), or None (counted);
    for ``prompt``, the prompt's ids with its messages and fields (see the module docstring).

    A record cut at ``max_length`` adds its untruncated length to ``truncated_lengths`` (when given), also when
    the cut then drops it.

    With ``settings.guidance_text`` (preference only), the example also holds
    ``guided_{chosen,rejected}_{input_ids,labels}``: the same pair with the instruction in the system message
    (`guided_prompt`). Both versions must score the same completion tokens, since preference-guided DPO compares
    their log-probs. Truncation can break that, or cut the instruction itself (a long prompt loses tokens from its
    start, where the instruction is): such a pair is dropped as ``dropped/guided_completion_truncated`` or
    ``dropped/guided_instruction_truncated``.
    """
    max_length, max_prompt_length = settings.max_length, settings.max_prompt_length
    if "ground_truth" in record and settings.task != "prompt":
        raise ConfigError(
            f"source {record.get('source')!r} line {record.get('row')} is prompt-only data (a prompt and its ground "
            f"truth, no answer to learn from), but this module trains on {settings.task} data. GRPOModule and "
            "ExpertIterationModule (task: prompt) train on prompts; give this module chat or preference sources"
        )
    if settings.task == "prompt":
        return _prompt_example(record, tokenizer, settings, counts, truncated_lengths)
    if settings.task == "preference":
        if "chosen" not in record:
            raise ConfigError(
                f"source {record.get('source')!r} line {record.get('row')} is chat (SFT) data, but this module "
                "trains on preference pairs: give sources with prompt/chosen/rejected"
            )
        chosen, rejected = tokenize_preference(
            tokenizer, record["prompt"], record["chosen"], record["rejected"], max_length, max_prompt_length
        )
        if (chosen.truncated or rejected.truncated) and truncated_lengths is not None:
            truncated_lengths.append(max(chosen.untruncated_length, rejected.untruncated_length))
        if chosen.n_label_tokens == 0 or rejected.n_label_tokens == 0:
            counts["dropped/no_completion_tokens_after_truncation"] += 1
            return None
        example = {
            "chosen_input_ids": chosen.input_ids,
            "chosen_labels": chosen.labels,
            "rejected_input_ids": rejected.input_ids,
            "rejected_labels": rejected.labels,
            "length": max(len(chosen.input_ids), len(rejected.input_ids)),
        }
        if settings.guidance_text is not None:
            guided = _guided_pair(record, (chosen, rejected), tokenizer, settings)
            if isinstance(guided, str):
                counts[f"dropped/{guided}"] += 1
                return None
            example.update(guided, length=max(example["length"], *(len(ids) for ids in guided.values())))
        counts["truncated"] += chosen.truncated or rejected.truncated
        return example
    # Preference records feed SFT as prompt + chosen: the usual "SFT on the preferred answers" step.
    messages = record["messages"] if "messages" in record else record["prompt"] + record["chosen"]
    example = tokenize_sft(tokenizer, messages, max_length)
    if example.truncated and truncated_lengths is not None:
        truncated_lengths.append(example.untruncated_length)
    if example.n_label_tokens == 0:
        counts["dropped/no_assistant_tokens_after_truncation"] += 1
        return None
    counts["truncated"] += example.truncated
    return {"input_ids": example.input_ids, "labels": example.labels, "length": len(example.input_ids)}


def as_prompt_record(record: dict) -> dict:
    """A record of a source read as an SFT format, for task ``prompt``: the prompt runs through the last user turn,
    the last assistant message is the ground truth (`from_conversation`; fields ``{"ground_truth": ...}``).
    Prompt records pass as they are; a preference pair is a `ConfigError` naming its source and line. A chat that
    has no user turn raises FieldError, for the caller to place in its file."""
    if "ground_truth" in record:
        return record
    if "chosen" in record:
        raise ConfigError(f"source {record.get('source')!r} line {record.get('row')}: {PREFERENCE_REASON}")
    converted = from_conversation(record["messages"], "messages")
    return {**converted, **{k: v for k, v in record.items() if k != "messages"}}


def render_prompt(prompt: list[dict], system_prompt: str | None, template: str | None) -> list[dict]:
    """The messages a prompt example is tokenised from: ``template`` (a ``str.format`` string with one
    ``{prompt}`` field) wraps the last user message, and ``system_prompt`` becomes the system message
    (`guided_prompt`: a system message of the data keeps its text after it)."""
    messages = [dict(m) for m in prompt]
    if template is not None:
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last_user is None:
            raise ValueError("data.prompt_template wraps the last user message, but the prompt has none")
        messages[last_user]["content"] = template.format(prompt=messages[last_user]["content"])
    return messages if system_prompt is None else guided_prompt(messages, system_prompt)


def _prompt_example(
    record: dict, tokenizer, settings: PrepareSettings, counts: Counter, truncated_lengths: list[int] | None
) -> dict | None:
    """``prompt_input_ids`` ending with the generation prompt, or None for a prompt over ``max_length``
    (``dropped/prompt_too_long``; its length goes to ``truncated_lengths``, so too many stop the run)."""
    messages = render_prompt(record["prompt"], settings.system_prompt, settings.prompt_template)
    ids = tokenize_prompt(tokenizer, messages)
    if len(ids) > settings.max_length:
        counts["dropped/prompt_too_long"] += 1
        if truncated_lengths is not None:
            truncated_lengths.append(len(ids))
        return None
    fields = record.get("fields", {"ground_truth": record["ground_truth"]})
    return {"prompt_input_ids": ids, "length": len(ids), "prompt": messages, "fields": dict(fields)}


def guided_prompt(prompt: list[dict], guidance_text: str) -> list[dict]:
    """``prompt`` with ``guidance_text`` as its system message.

    When the prompt already starts with a system message, the instruction goes first in it, then a blank line,
    then the original system text: one system turn, as every chat template expects, and the task's own system
    text stays closest to the conversation.
    """
    if prompt and prompt[0]["role"] == "system":
        system = {**prompt[0], "content": f"{guidance_text}\n\n{prompt[0]['content']}"}
        return [system, *prompt[1:]]
    return [{"role": "system", "content": guidance_text}, *prompt]


def _guided_pair(
    record: dict,
    plain: tuple[Tokenized, Tokenized],
    tokenizer,
    settings: PrepareSettings,
) -> dict | str:
    """The ``guided_*`` keys of an example, or the reason the pair is dropped."""
    prompt = guided_prompt(record["prompt"], settings.guidance_text)
    sides = tokenize_preference(
        tokenizer, prompt, record["chosen"], record["rejected"], settings.max_length, settings.max_prompt_length
    )
    out = {}
    for name, side, plain_side in zip(("chosen", "rejected"), sides, plain, strict=True):
        if _completion(side) != _completion(plain_side):
            return "guided_completion_truncated"
        # Rare (truncated sides only): tokenise again uncut to see whether the prompt lost its start.
        if side.truncated:
            whole = tokenize_conversation(tokenizer, prompt + record[name], first_labelled=len(prompt))
            if _prompt_length(side) < _prompt_length(whole):
                return "guided_instruction_truncated"
        out[f"guided_{name}_input_ids"], out[f"guided_{name}_labels"] = side.input_ids, side.labels
    return out


def _completion(seq: Tokenized) -> list[int]:
    return [label for label in seq.labels if label != IGNORE_INDEX]


def _prompt_length(seq: Tokenized) -> int:
    return next((i for i, label in enumerate(seq.labels) if label != IGNORE_INDEX), len(seq.labels))
