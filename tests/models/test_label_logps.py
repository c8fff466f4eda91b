"""Label log-probs from the final hidden states in chunks equal those of the full logits (issue 12).

`label_token_logps` must give the values and the gradients of `token_logps(model(...).logits)` on every
architecture whose logits it claims to reproduce (plain, tied, soft-capped, with LoRA on the head, with gradient
checkpointing), stop on an architecture it does not know, apply the head at label positions only, and keep peak
memory at the scale of one chunk's logits. Tiny models are built from configs: no download.
"""

from __future__ import annotations

import warnings
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lit_align.constants import IGNORE_INDEX
from lit_align.models import label_logps
from lit_align.models.label_logps import label_token_logps
from lit_align.models.token_logps import token_logps

VOCAB = 400
CHUNK = 5
TOLERANCE = {"atol": 1e-5, "rtol": 0.0}
"""Absolute: values are log-probs of order 1 to 10, gradients reach 3 to 10, so 1e-5 is about 1e-6 relative."""

ARCHITECTURES = {
    "llama": (LlamaForCausalLM, LlamaConfig, {"tie_word_embeddings": False}),
    "llama-tied": (LlamaForCausalLM, LlamaConfig, {"tie_word_embeddings": True}),
    "qwen2": (Qwen2ForCausalLM, Qwen2Config, {}),
    # Raw logits reach about 5 (initializer_range 0.2): a cap of 5 moves them by far more than the check allows.
    "gemma2": (Gemma2ForCausalLM, Gemma2Config, {"final_logit_softcapping": 5.0, "attn_implementation": "eager"}),
}


def _tiny(name: str, model_class=None, vocab_size: int = VOCAB, **overrides) -> torch.nn.Module:
    default_class, config_class, kwargs = ARCHITECTURES[name]
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    sizes |= {"num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 256, "initializer_range": 0.2}
    config = config_class(vocab_size=vocab_size, **(sizes | kwargs | overrides))
    torch.manual_seed(0)
    return (model_class or default_class)(config).float()


def _batch(vocab_size: int = VOCAB, size: int = 3, length: int = 12, prompt: int = 3, seed: int = 1):
    """Right-padded rows (the second and third shorter), -100 on the prompt and the padding."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row, end in zip(range(1, size), (length - 3, length // 2), strict=False):
        attention_mask[row, end:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    labels[:, :prompt] = IGNORE_INDEX
    weights = torch.rand(size, length - 1, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask}, labels, weights


def _targets(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _assert_same_as_full_logits(model: torch.nn.Module, chunk_size: int = CHUNK) -> None:
    """Values, and gradients of ``sum(logps × w)`` for every trainable parameter, match the full-logits path."""
    inputs, labels, weights = _batch()
    assert _targets(labels) > 2 * chunk_size and _targets(labels) % chunk_size, "several chunks, the last partial"
    params = [p for p in model.parameters() if p.requires_grad]

    logps, mask = label_token_logps(model, labels, inputs, chunk_size=chunk_size)
    grads = torch.autograd.grad((logps * weights).sum(), params)
    expected_logps, expected_mask = token_logps(model(**inputs).logits, labels)
    expected_grads = torch.autograd.grad((expected_logps * weights).sum(), params)

    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(logps, expected_logps, **TOLERANCE)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert expected.abs().max() > 0, "every parameter takes part"
        torch.testing.assert_close(grad, expected, **TOLERANCE)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_chunks_equal_the_full_logits(name):
    model = _tiny(name)
    _assert_same_as_full_logits(model)
    inputs, labels, _ = _batch()
    with torch.no_grad():  # the reference's pass; default chunk size (one chunk here)
        logps, _ = label_token_logps(model, labels, inputs)
        torch.testing.assert_close(logps, token_logps(model(**inputs).logits, labels)[0], **TOLERANCE)


@pytest.mark.parametrize("name", ["llama", "gemma2"])
def test_lora_on_the_head(name):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(target_modules=["q_proj", "v_proj", "lm_head"], r=4, init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT on a tied head, and its transformers-5 deprecation notice
        model = get_peft_model(_tiny(name), lora)
    assert type(model.get_output_embeddings()).__module__.startswith("peft"), "the head is the LoRA layer"
    _assert_same_as_full_logits(model)


def test_lora_dropout_on_the_head_passes_the_check():
    """In training the two head calls the check compares would draw different dropout masks: a non-zero adapter
    (a resumed run) made a correct model fail as an unknown architecture. The head is in eval mode for the check
    only."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(target_modules=["lm_head"], r=4, lora_dropout=0.5, init_lora_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(_tiny("llama"), lora)
    model.train()
    inputs, labels, _ = _batch()
    logps, mask = label_token_logps(model, labels, inputs, chunk_size=CHUNK)
    assert model.get_output_embeddings().training
    logps.sum().backward()
    assert torch.isfinite(logps).all() and mask.sum() == _targets(labels)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_gradient_checkpointing(name):
    model = _tiny(name)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    _assert_same_as_full_logits(model)


class DoubledLlama(LlamaForCausalLM):
    """Scales its logits in a way `logits_transform` cannot know; keeps ``logits_to_keep`` in its signature."""

    def forward(self, input_ids=None, attention_mask=None, logits_to_keep=0, **kwargs):
        output = super().forward(input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep, **kwargs)
        output.logits = output.logits * 2
        return output


def test_an_unknown_logit_transform_stops_and_the_plain_path_works():
    model = _tiny("llama", DoubledLlama)
    inputs, labels, _ = _batch()
    with pytest.raises(ValueError, match=r"^DoubledLlama's logits .*logps_chunk_size: 0"):
        label_token_logps(model, labels, inputs, chunk_size=CHUNK)
    logps, mask = label_token_logps(model, labels, inputs, chunk_size=0)
    expected, _ = token_logps(model(**inputs).logits, labels)
    assert mask.sum() == _targets(labels)
    torch.testing.assert_close(logps, expected, **TOLERANCE)


def test_gemma2_without_its_softcap_is_stopped(monkeypatch):
    """The cap of the Gemma 2 case is large enough to matter: forgetting it trips the check."""
    monkeypatch.setattr(label_logps, "logits_transform", lambda config: lambda logits: logits)
    inputs, labels, _ = _batch()
    with pytest.raises(ValueError, match="^Gemma2ForCausalLM's logits"):
        label_token_logps(_tiny("gemma2"), labels, inputs, chunk_size=CHUNK)


class KeywordLlama(LlamaForCausalLM):
    """A wrapper whose forward does not name ``logits_to_keep`` (as old remote code)."""

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        return super().forward(input_ids, attention_mask=attention_mask, labels=labels)


def test_a_forward_without_logits_to_keep_falls_back_with_a_warning():
    model = _tiny("llama", KeywordLlama)
    inputs, labels, _ = _batch()
    with pytest.warns(UserWarning, match="KeywordLlama takes no logits_to_keep"):
        logps, _ = label_token_logps(model, labels, inputs, chunk_size=CHUNK)
    torch.testing.assert_close(logps, token_logps(model(**inputs).logits, labels)[0], **TOLERANCE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        label_token_logps(model, labels, inputs, chunk_size=CHUNK)


def test_only_label_positions_reach_the_head():
    """Rows through the head: B (the model's own ``logits_to_keep=1``) + B (the one-time check) + the label
    targets, each recomputed once in backward; not B × T."""
    model = _tiny("llama")
    inputs, labels, _ = _batch(length=40, prompt=20)
    size, targets = labels.shape[0], _targets(labels)
    rows = []
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[:-1].numel()))

    logps, _ = label_token_logps(model, labels, inputs, chunk_size=CHUNK)
    assert sum(rows) == 2 * size + targets
    logps.sum().backward()
    assert sum(rows) == 2 * size + 2 * targets
    rows.clear()
    with torch.no_grad():  # checked already: no check rows, no recomputation
        label_token_logps(model, labels, inputs, chunk_size=CHUNK)
    assert sum(rows) == size + targets
    assert size + targets < labels.numel() / 2


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created under this mode and still alive; ``peak`` is their maximum.

    A storage is counted when an op first returns it and uncounted when it is freed (a weakref on the storage,
    which PyTorch keeps as one Python object for its lifetime). Storages an op takes in that were not created
    under the mode (parameters, inputs) count zero. Temporaries inside one ATen kernel are invisible."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _track(self, tensor: torch.Tensor, count: bool) -> None:
        storage = tensor.untyped_storage()
        if id(storage) in self._seen:
            return
        size = storage.nbytes() if count else 0
        self._seen.add(id(storage))
        self.live += size
        weakref.finalize(storage, self._free, id(storage), size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for value in tree_flatten((args, kwargs))[0]:
            if isinstance(value, torch.Tensor):
                self._track(value, count=False)
        output = func(*args, **(kwargs or {}))
        for value in tree_flatten(output)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value, count=True)
        self.peak = max(self.peak, self.live)
        return output


def _peak_bytes(model: torch.nn.Module, step) -> int:
    model.zero_grad(set_to_none=True)
    with _LiveBytes() as tracker:
        step()
    return tracker.peak


def test_peak_memory_grows_with_the_chunk_not_the_batch():
    """Peak bytes of live tensors during forward + backward, Llama with V = 32,000, B × T = 4 × 256 (192 label
    positions a row), chunks of 32:

    - ``base``: the same forward and backward with ``logits_to_keep=1`` and no label head (decoder activations,
      parameter gradients, [B, V] last logits), measured.
    - chunked path ≤ base + c × chunk × V × 4 with c = 5. In a chunk's backward at most four [chunk, V] float32
      tensors live at once: the recomputed logits, the gradient through logsumexp (logits − lse, its exp, times
      the incoming gradient: three ops, two alive with the logits), the gradient through gather (zeros, then
      scatter_add) and their sum; one more for slack. Measured: about 3.9.
      Keeping every chunk's logits (no checkpoint) or computing all positions' logits at once breaks the bound.
    - That bound is under half of B × T × V × 4 (the full logits, 131 MB); the plain path's peak exceeds it."""
    vocab, chunk = 32_000, 32
    model = _tiny("llama", vocab_size=vocab, num_hidden_layers=1, initializer_range=0.02)
    inputs, labels, _ = _batch(vocab, size=4, length=256, prompt=64)
    full_logits = labels.numel() * vocab * 4

    base = _peak_bytes(model, lambda: model(**inputs, logits_to_keep=1).logits.sum().backward())
    chunked = _peak_bytes(model, lambda: label_token_logps(model, labels, inputs, chunk)[0].sum().backward())
    plain = _peak_bytes(model, lambda: token_logps(model(**inputs).logits, labels)[0].sum().backward())

    bound = base + 5 * chunk * vocab * 4
    assert chunked <= bound, f"chunked peak {chunked / 2**20:.1f} MiB > bound {bound / 2**20:.1f} MiB"
    assert bound < full_logits / 2
    assert plain > full_logits, f"plain peak {plain / 2**20:.1f} MiB, full logits {full_logits / 2**20:.1f} MiB"
