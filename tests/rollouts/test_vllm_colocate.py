"""The optional vLLM backend, as far as a machine without GPU or vLLM can check it.

Real: the refusal of ``use_vllm`` here, and the weights we would push (a tiny PEFT model's merged LoRA, by hand).
Against a stand-in ``vllm`` module: what ``VLLMColocate`` passes to vLLM and how it reads the answer. That checks
our side of the API as vLLM documents it, not vLLM itself.
"""

import importlib.machinery
import importlib.util
import os
import sys
import types

import pytest
import torch

from lit_align.checks import ConfigError
from lit_align.rollouts.sampling import SamplingSettings
from lit_align.rollouts.vllm_colocate import (
    VLLMColocate,
    check_vllm_available,
    completion_ids,
    merged_state_dict,
    plain_weights,
    sampling_kwargs,
)
from tests.conftest import TINY_MODEL

LAYER = "model.layers.0.self_attn.q_proj.weight"


def _plain():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(TINY_MODEL))


def _peft(**config):
    """The tiny model with a LoRA adapter on q_proj and v_proj; ``init_lora_weights=False`` makes B non-zero, so
    merging changes the weights. Scale = lora_alpha / r = 8 / 4 = 2."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = LoraConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8, init_lora_weights=False, **config)
    return get_peft_model(_plain(), lora)


def _q_proj(model):
    return model.base_model.model.model.layers[0].self_attn.q_proj


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the refusal for lack of CUDA cannot happen")
def test_use_vllm_is_refused_without_a_gpu():
    with pytest.raises(ConfigError) as caught:
        check_vllm_available()
    assert "model.init_args.use_vllm" in str(caught.value)
    assert "no CUDA GPU" in str(caught.value)


def test_use_vllm_is_refused_without_vllm(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    with pytest.raises(ConfigError) as caught:
        check_vllm_available()
    expected = 'model.init_args.use_vllm is true, but vllm is not installed (pip install -e ".[vllm]")'
    assert str(caught.value).startswith(expected)


def test_merged_state_dict_is_the_plain_model_with_the_adapter_merged():
    plain_keys = list(_plain().state_dict())
    policy = _peft()
    q_proj = _q_proj(policy)
    base = q_proj.base_layer.weight.detach().clone()
    lora_a, lora_b = q_proj.lora_A["default"].weight.detach(), q_proj.lora_B["default"].weight.detach()
    assert lora_b.abs().sum() > 0, "a zero B would make the merge a no-op and the test meaningless"
    before = {name: tensor.clone() for name, tensor in policy.state_dict().items()}

    merged = merged_state_dict(policy)

    assert list(merged) == plain_keys
    torch.testing.assert_close(merged[LAYER], base + 2.0 * lora_b @ lora_a)
    assert not torch.equal(merged[LAYER], base)
    untouched = "model.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(merged[untouched], before[f"base_model.model.{untouched}"], rtol=0, atol=0)
    # The policy is unmerged again and its weights are what they were (to float rounding of W + d - d).
    assert not q_proj.merged
    after = policy.state_dict()
    assert list(after) == list(before)
    for name, tensor in before.items():
        torch.testing.assert_close(after[name], tensor)
    assert merged[LAYER].data_ptr() != q_proj.base_layer.weight.data_ptr(), "a copy, not the policy's storage"


def test_modules_to_save_give_their_trained_copy_under_the_plain_name():
    policy = _peft(modules_to_save=["model.norm"])
    with torch.no_grad():
        policy.base_model.model.model.norm.modules_to_save["default"].weight.fill_(2.0)
    merged = merged_state_dict(policy)
    assert list(merged) == list(_plain().state_dict())
    assert torch.equal(merged["model.norm.weight"], torch.full((128,), 2.0))


def test_the_adapter_is_unmerged_even_when_the_block_raises():
    policy = _peft()
    base = _q_proj(policy).base_layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="push failed"), plain_weights(policy):
        assert _q_proj(policy).merged
        raise RuntimeError("push failed")
    assert not _q_proj(policy).merged
    torch.testing.assert_close(_q_proj(policy).base_layer.weight, base)


def test_a_plain_model_gives_its_own_state_dict():
    model = _plain()
    merged = merged_state_dict(model)
    assert list(merged) == list(model.state_dict())
    assert torch.equal(merged[LAYER], model.state_dict()[LAYER])


def test_sampling_settings_in_vllm_terms():
    settings = SamplingSettings(max_completion_length=64, temperature=0.7, top_p=0.9, top_k=0)
    assert sampling_kwargs(4, settings) == {"n": 4, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_tokens": 64}
    assert sampling_kwargs(1, SamplingSettings(top_k=20))["top_k"] == 20
    with pytest.raises(ConfigError, match="num_generations"):
        sampling_kwargs(0, settings)


def _request(*completions):
    """A vLLM ``RequestOutput`` stand-in: ``(index, token_ids)`` pairs, in the order given."""
    return types.SimpleNamespace(
        outputs=[types.SimpleNamespace(index=i, token_ids=tuple(ids)) for i, ids in completions]
    )


def test_completions_are_grouped_by_prompt_in_index_order():
    outputs = [_request((1, [5, 2]), (0, [4])), _request((0, [7, 8, 2]), (1, []))]
    assert completion_ids(outputs, 2) == [[4], [5, 2], [7, 8, 2], []]
    with pytest.raises(RuntimeError, match="1 completions for a prompt, expected 2"):
        completion_ids([_request((0, [1]))], 2)


class _FakeLLM:
    """Records what VLLMColocate asks of ``vllm.LLM``; answers ``generate`` with ids derived from the prompt."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        # vLLM's load_weights copies each tensor into the engine's own parameters during the call; so does this.
        self.model = types.SimpleNamespace(loaded=[])
        self.model.load_weights = lambda weights: self.model.loaded.extend((n, t.clone()) for n, t in weights)
        self.prefix_cache_resets = 0

    def generate(self, prompts, sampling_params, use_tqdm):
        self.sampling_params = sampling_params
        n = sampling_params["n"]
        return [_request(*[(i, [p["prompt_token_ids"][0], i]) for i in reversed(range(n))]) for p in prompts]

    def apply_model(self, function):
        return [function(self.model)]

    def reset_prefix_cache(self):
        self.prefix_cache_resets += 1


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = _FakeLLM, dict
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    yield module
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(name, None)


def test_the_engine_is_built_in_process_on_this_rank(fake_vllm):
    engine = VLLMColocate("some/model", max_model_len=320, gpu_memory_utilization=0.25, dtype="bfloat16", seed=3)
    kwargs = engine._llm.kwargs
    assert kwargs["model"] == "some/model" and kwargs["max_model_len"] == 320 and kwargs["seed"] == 3
    assert kwargs["gpu_memory_utilization"] == 0.25 and kwargs["dtype"] == "bfloat16"
    assert kwargs["distributed_executor_backend"] == "external_launcher" and kwargs["tensor_parallel_size"] == 1
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("0", "1", "0")
    assert int(os.environ["MASTER_PORT"]) > 0


def test_generate_and_sync_weights_through_the_engine(fake_vllm):
    engine = VLLMColocate("some/model", max_model_len=64)
    settings = SamplingSettings(max_completion_length=16, top_k=0)
    assert engine.generate([[10, 11], [20]], 3, settings) == [[10, 0], [10, 1], [10, 2], [20, 0], [20, 1], [20, 2]]
    assert engine._llm.sampling_params["top_k"] == -1 and engine._llm.sampling_params["max_tokens"] == 16

    policy = _peft()
    expected = merged_state_dict(policy)
    engine.sync_weights(policy)
    loaded = dict(engine._llm.model.loaded)
    assert list(loaded) == list(expected)
    torch.testing.assert_close(loaded[LAYER], expected[LAYER])
    assert engine._llm.prefix_cache_resets == 1
    assert not _q_proj(policy).merged


def test_bad_engine_settings_are_refused_before_vllm_loads(fake_vllm):
    with pytest.raises(ConfigError, match="vllm_gpu_memory_utilization must be in"):
        VLLMColocate("some/model", max_model_len=64, gpu_memory_utilization=1.5)
