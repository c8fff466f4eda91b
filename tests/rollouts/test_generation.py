"""Sampling completions and laying them out for the training forward (`lit_align.rollouts.generation`).

The list arithmetic (`trim_completions`, `prompt_rows`, `completion_batch`) is checked on hand-written ids; the
generation itself on the tiny chat model, against a plain ``model.generate`` of each prompt alone.
"""

import pytest
import torch

from lit_align.constants import IGNORE_INDEX
from lit_align.data.batch import PromptBatch
from lit_align.data.collate import PromptCollator
from lit_align.data.tokenize import tokenize_prompt
from lit_align.models import load_causal_lm
from lit_align.models.generation_inputs import eos_token_ids
from lit_align.rollouts.generation import (
    Completions,
    completion_batch,
    generate_completions,
    prompt_rows,
    trim_completions,
)
from lit_align.rollouts.sampling import SamplingSettings

from ..conftest import TINY_MODEL

EOS, PAD = 2, 0
X = IGNORE_INDEX


# ---- trim_completions ------------------------------------------------------------------------------------------


def test_trim_keeps_up_to_and_including_the_first_eos():
    generated = torch.tensor([[5, EOS, 7, EOS], [5, 6, EOS, PAD], [EOS, PAD, PAD, PAD]])
    rows, truncated = trim_completions(generated, [EOS])
    assert rows == [[5, EOS], [5, 6, EOS], [EOS]]
    assert truncated == [False, False, False]


def test_trim_stops_at_whichever_eos_id_comes_first():
    generated = torch.tensor([[4, 3, 2, 9], [4, 2, 3, 9], [4, 9, 9, 9]])
    rows, truncated = trim_completions(generated, [2, 3])
    assert rows == [[4, 3], [4, 2], [4, 9, 9, 9]]
    assert truncated == [False, False, True]


def test_a_row_without_eos_is_truncated_and_keeps_every_token():
    """``generate`` pads only rows that have ended: pad ids in a row without EOS are tokens the model wrote (the
    tiny model's 12th greedy token for "What is 2 plus 3?" is its pad token, ``<|endoftext|>``)."""
    generated = torch.tensor([[5, 6, PAD, PAD], [5, PAD, 6, PAD], [5, 6, 7, 8]])
    rows, truncated = trim_completions(generated, [EOS])
    assert rows == generated.tolist()
    assert truncated == [True, True, True]


def test_a_pad_id_that_is_also_eos_ends_the_row_once():
    """Qwen-style: the padding ``generate`` writes after the end is the EOS id itself; only the first one counts."""
    generated = torch.tensor([[5, EOS, EOS, EOS], [5, 6, 7, 8], [EOS, EOS, EOS, EOS]])
    rows, truncated = trim_completions(generated, [EOS])
    assert rows == [[5, EOS], [5, 6, 7, 8], [EOS]]
    assert truncated == [False, True, False]


# ---- prompt_rows and completion_batch --------------------------------------------------------------------------


def _prompt_batch(rows: list[list[int]]) -> PromptBatch:
    examples = [{"prompt_input_ids": row, "prompt": [], "fields": {}, "source": "hand"} for row in rows]
    return PromptCollator(pad_token_id=PAD)(examples)


def test_prompt_rows_strip_exactly_the_left_padding():
    """The mask, not the pad id, decides: a prompt may hold the pad token itself (here ``PAD`` inside row 1)."""
    batch = _prompt_batch([[7, 8], [9, PAD, 5], [PAD, 4, 4, 4]])
    assert batch.input_ids.tolist() == [[PAD, PAD, 7, 8], [PAD, 9, PAD, 5], [PAD, 4, 4, 4]]
    assert prompt_rows(batch) == [[7, 8], [9, PAD, 5], [PAD, 4, 4, 4]]


def test_completion_batch_puts_each_prompt_before_its_group_and_labels_the_completions():
    prompts = [[11, 12, 13], [21]]
    completions = Completions(ids=[[5, EOS], [6, 7, 8, EOS], [9], [4, EOS]], truncated=[0, 0, 1, 0], group_size=2)
    batch = completion_batch(prompts, completions, pad_id=PAD)
    assert batch.input_ids.tolist() == [
        [11, 12, 13, 5, EOS, PAD, PAD],
        [11, 12, 13, 6, 7, 8, EOS],
        [21, 9, PAD, PAD, PAD, PAD, PAD],
        [21, 4, EOS, PAD, PAD, PAD, PAD],
    ]
    assert batch.attention_mask.tolist() == [
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
    ]
    assert batch.labels.tolist() == [
        [X, X, X, 5, EOS, X, X],
        [X, X, X, 6, 7, 8, EOS],
        [X, 9, X, X, X, X, X],
        [X, 4, EOS, X, X, X, X],
    ]
    assert not batch.packed and batch.num_sequences == 4


# ---- generate_completions on the tiny model --------------------------------------------------------------------

QUESTIONS = ["What is 2 plus 3?", "Tell me a long story about the colour of the sky, please."]


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(str(TINY_MODEL)).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer) -> PromptBatch:
    """Two chat-templated prompts of different lengths: the first is padded on the left."""
    examples = []
    for row, question in enumerate(QUESTIONS):
        messages = [{"role": "user", "content": question}]
        ids = tokenize_prompt(tokenizer, messages)
        examples.append({"prompt_input_ids": ids, "prompt": messages, "fields": {}, "source": "q", "row": row})
    batch = PromptCollator(tokenizer.pad_token_id)(examples)
    lengths = batch.attention_mask.sum(1).tolist()
    assert lengths[0] < lengths[1], "the first prompt is padded"
    return batch


def _plain_greedy(model, prompt: list[int], max_new_tokens: int, eos_ids: list[int]) -> list[int]:
    """``model.generate`` on one prompt alone: no padding, no repetition."""
    ids = torch.tensor([prompt])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=PAD,
        eos_token_id=eos_ids,
    )
    return out[0, ids.shape[1] :].tolist()


def test_greedy_group_members_equal_plain_generate_of_their_prompt(model, tokenizer, prompts):
    eos_ids = eos_token_ids(model, tokenizer)
    assert eos_ids == [EOS]
    settings = SamplingSettings(max_completion_length=12)
    completions = generate_completions(model, prompts, 2, settings, eos_ids, PAD, greedy=True)

    assert completions.group_size == 2 and len(completions.ids) == 4
    for number, prompt in enumerate(prompt_rows(prompts)):
        expected = _plain_greedy(model, prompt, 12, eos_ids)
        assert completions.ids[2 * number] == completions.ids[2 * number + 1] == expected
    assert completions.truncated == [EOS not in ids for ids in completions.ids]
    assert all(length <= 12 for length in completions.lengths)

    # Laid out for training: every label is a completion token, in order, after the unpadded prompt.
    batch = completion_batch(prompt_rows(prompts), completions, PAD)
    for row, ids in enumerate(completions.ids):
        labelled = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert labelled == ids


def test_a_completion_ends_at_its_first_eos_and_the_rest_are_truncated(model, prompts):
    """Make a token of prompt 0's greedy answer (its first that prompt 1's answer never writes) an end-of-turn id:
    prompt 0's group stops there, EOS kept, not truncated; prompt 1's group runs to ``max_completion_length``."""
    rows = prompt_rows(prompts)
    first, second = (_plain_greedy(model, row, 10, [EOS]) for row in rows)
    assert EOS not in first + second and len(first) == len(second) == 10
    end = next(k for k in range(1, 10) if first[k] not in first[:k] + second)
    stop = first[end]

    settings = SamplingSettings(max_completion_length=10)
    completions = generate_completions(model, prompts, 2, settings, [EOS, stop], PAD, greedy=True)
    assert completions.ids == [first[: end + 1]] * 2 + [second] * 2
    assert completions.lengths == [end + 1, end + 1, 10, 10]
    assert completions.truncated == [False, False, True, True]


def test_sampling_with_a_fixed_seed_is_reproducible_and_bounded(model, prompts):
    settings = SamplingSettings(max_completion_length=6, temperature=1.0, top_p=0.95, top_k=50)
    torch.manual_seed(0)
    first = generate_completions(model, prompts, 3, settings, [EOS], PAD)
    torch.manual_seed(0)
    second = generate_completions(model, prompts, 3, settings, [EOS], PAD)
    assert first == second
    assert len(first.ids) == 6 and all(1 <= length <= 6 for length in first.lengths)
    assert first.truncated == [len(ids) == 6 and ids[-1] != EOS for ids in first.ids]
    greedy = generate_completions(model, prompts, 3, settings, [EOS], PAD, greedy=True)
    assert first.ids != greedy.ids, "sampling samples"


def test_sampling_ignores_the_models_own_generation_defaults():
    """A hub model's generation_config.json (here: a repetition penalty and min_new_tokens) must not change what
    GRPO samples: the log-probs it trains on are the model's plain distribution."""
    from transformers import AutoModelForCausalLM

    from lit_align.rollouts.generation import plain_generation_defaults

    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.min_new_tokens = 2
    with plain_generation_defaults(model):
        config, _ = model._prepare_generation_config(None)
        assert config.repetition_penalty == 1.0 and not config.min_new_tokens
    assert model.generation_config.repetition_penalty == 1.3  # put back
