import pytest

from lit_align.constants import IGNORE_INDEX
from lit_align.data.collate import PreferenceCollator, SFTCollator
from lit_align.data.tokenize import tokenize_conversation, tokenize_preference, tokenize_sft

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "天空是什么颜色？"},
    {"role": "assistant", "content": "天空是蓝色的。"},
]


def _labelled_runs(tokenizer, out):
    """Decoded text of each maximal run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(out.input_ids, out.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_multi_turn_labels_cover_exactly_the_assistant_turns(tokenizer):
    out = tokenize_conversation(tokenizer, CHAT)
    # ChatML: each assistant turn is its content, <|im_end|> and the newline after it; nothing else is learned.
    assert _labelled_runs(tokenizer, out) == ["2 + 3 = 5.<|im_end|>\n", "天空是蓝色的。<|im_end|>\n"]
    assert tokenizer.decode(out.input_ids) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    prompt_ids = [t for t, label in zip(out.input_ids, out.labels, strict=True) if label == IGNORE_INDEX]
    unlabelled = tokenizer.decode(prompt_ids)
    assert unlabelled == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n<|im_start|>user\n天空是什么颜色？<|im_end|>\n<|im_start|>assistant\n"
    )


def test_first_labelled_skips_earlier_assistant_turns(tokenizer):
    out = tokenize_conversation(tokenizer, CHAT, first_labelled=3)
    assert _labelled_runs(tokenizer, out) == ["天空是蓝色的。<|im_end|>\n"]


def test_template_that_rewrites_history_is_refused(tokenizer):
    # Like templates that strip earlier reasoning: the last message only, so history is not a prefix.
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = "{{ messages[-1]['role'] + ': ' + messages[-1]['content'] }}"
    with pytest.raises(ValueError, match="prefix-consistently"):
        tokenize_conversation(tok, CHAT)


def test_sft_truncation_cuts_from_the_right(tokenizer):
    full = tokenize_sft(tokenizer, CHAT, max_length=10_000)
    cut = tokenize_sft(tokenizer, CHAT, max_length=len(full.input_ids) - 3)
    assert not full.truncated and cut.truncated
    assert cut.input_ids == full.input_ids[:-3] and cut.labels == full.labels[:-3]


def test_preference_truncation_drops_prompt_start_then_completion_end(tokenizer):
    prompt = CHAT[:4]
    chosen = [{"role": "assistant", "content": "天空是蓝色的。"}]
    rejected = [{"role": "assistant", "content": "The sky is blue, as everyone knows very well indeed."}]
    full_c, full_r = tokenize_preference(tokenizer, prompt, chosen, rejected, max_length=10_000)
    prompt_len = next(i for i, label in enumerate(full_r.labels) if label != IGNORE_INDEX)
    completion_len = len(full_r.input_ids) - prompt_len
    # Room for 4 prompt tokens and the whole completion: the prompt loses its start only.
    max_length = 4 + completion_len
    c, r = tokenize_preference(tokenizer, prompt, chosen, rejected, max_length=max_length, max_prompt_length=4)
    assert r.truncated and r.input_ids == full_r.input_ids[prompt_len - 4 :]
    assert len(r.input_ids) == max_length
    # The chosen side is cut the same way and keeps its whole (shorter) completion.
    assert c.n_label_tokens == full_c.n_label_tokens and c.input_ids == full_c.input_ids[-len(c.input_ids) :]
    # Prompt already at its floor: the completion loses its end.
    c2, r2 = tokenize_preference(tokenizer, prompt, chosen, rejected, max_length=max_length - 2, max_prompt_length=4)
    assert r2.input_ids == full_r.input_ids[prompt_len - 4 : -2]


def test_sft_collator_pads_right_with_masks():
    batch = SFTCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_preference_collator_stacks_chosen_then_rejected_to_one_length():
    pairs = [
        {
            "chosen_input_ids": [1, 2],
            "chosen_labels": [-100, 2],
            "rejected_input_ids": [1, 3, 4],
            "rejected_labels": [-100, 3, 4],
        },
        {"chosen_input_ids": [5], "chosen_labels": [5], "rejected_input_ids": [6, 7], "rejected_labels": [-100, 7]},
    ]
    batch = PreferenceCollator(pad_token_id=9, pad_to_multiple_of=4)(pairs)
    assert batch.input_ids.tolist() == [[1, 2, 9, 9], [5, 9, 9, 9], [1, 3, 4, 9], [6, 7, 9, 9]]
    assert batch.labels[1].tolist() == [5, -100, -100, -100]
