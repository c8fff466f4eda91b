"""scripts/make_soft_prompt.py writes a soft prompt the preference-guided module accepts."""

import importlib.util

import pytest
import torch

from lit_align.models import load_causal_lm, load_tokenizer
from lit_align.modules.preference_guided import load_soft_prompt

from ..conftest import ROOT, TINY_MODEL

spec = importlib.util.spec_from_file_location("make_soft_prompt", ROOT / "scripts" / "make_soft_prompt.py")
make_soft_prompt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_soft_prompt)


def test_init_text_rows_are_the_token_embeddings_tiled(tmp_path):
    out = make_soft_prompt.main(
        ["--model", str(TINY_MODEL), "--n-tokens", "8", "--output", str(tmp_path / "sp.pt"), "--init-text", "Hi there"]
    )
    prompt = load_soft_prompt(out)
    tokenizer = load_tokenizer(str(TINY_MODEL))
    ids = tokenizer("Hi there", add_special_tokens=False)["input_ids"]
    assert 1 < len(ids) < 8
    embeddings = load_causal_lm(str(TINY_MODEL)).get_input_embeddings().weight.detach()
    expected = embeddings[torch.tensor((ids * 8)[:8])]
    assert prompt.shape == (8, 128) and torch.equal(prompt, expected)


def test_random_init_is_seeded_and_on_the_embedding_scale(tmp_path):
    paths = [tmp_path / f"sp{i}.pt" for i in range(2)]
    for path in paths:
        make_soft_prompt.main(["--model", str(TINY_MODEL), "--n-tokens", "3", "--output", str(path), "--seed", "1"])
    first, second = (load_soft_prompt(p) for p in paths)
    assert first.shape == (3, 128) and torch.equal(first, second)
    scale = load_causal_lm(str(TINY_MODEL)).get_input_embeddings().weight.std().item()
    assert first.std().item() == pytest.approx(scale, rel=0.3)
