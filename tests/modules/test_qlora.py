"""QLoRA on the tiny model: 4-bit frozen weights, a LoRA adapter that really learns through a real ``Trainer.fit``
(sanity-check validation included), a DPO reference that is never a deep copy, checkpoints that hold the adapter."""

import math

import pytest
import torch
from bitsandbytes.nn import Linear4bit
from lightning.pytorch import Callback, Trainer, seed_everything
from torch.testing import assert_close

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.models import LoraSettings, QuantizationSettings
from lit_align.modules import PreferenceModule, SFTModule
from lit_align.modules.reference import AdapterOffReference

from ..conftest import DEMO_DATA, TINY_MODEL

QUANTIZATION = QuantizationSettings(compute_dtype="float32")  # bfloat16 matmuls are slow on most CPUs


@pytest.fixture(scope="module")
def batch():
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))], tokenizer=str(TINY_MODEL), task="preference", batch_size=4
    )
    data.setup()
    return next(iter(data.train_dataloader()))


def _module(**kwargs) -> PreferenceModule:
    kwargs = {"lora": LoraSettings(r=4, dropout=0.0), "quantization": QUANTIZATION, **kwargs}
    return PreferenceModule(str(TINY_MODEL), **kwargs)


def _linear4bit(module: torch.nn.Module) -> list[Linear4bit]:
    return [m for m in module.modules() if isinstance(m, Linear4bit)]


class _GradientProbe(Callback):
    """Records the LoRA gradients of each optimizer step and whether any 4-bit weight was in bitsandbytes' CPU
    inference layout at that moment."""

    def __init__(self) -> None:
        self.gradients: list[dict[str, torch.Tensor]] = []
        self.repacked: list[bool] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if "lora_" in n and p.grad is not None}
        self.gradients.append(grads)
        states = [layer.weight.quant_state for layer in _linear4bit(pl_module.policy)]
        self.repacked.append(any(getattr(s, "packing_format_for_cpu", False) for s in states))


def _fit(tmp_path, sanity_steps: int) -> tuple[PreferenceModule, _GradientProbe]:
    seed_everything(7)  # the LoRA A matrices start random
    module = _module(optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_train.jsonl"))],
        val=[DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="preference",
        max_length=128,
        batch_size=4,
    )
    probe = _GradientProbe()
    trainer = Trainer(
        max_steps=2,
        num_sanity_val_steps=sanity_steps,
        limit_val_batches=2,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[probe],
    )
    trainer.fit(module, datamodule=data)
    return module, probe


def test_qlora_learns_through_a_fit_that_starts_with_sanity_validation(tmp_path):
    module, probe = _fit(tmp_path / "with_sanity", sanity_steps=2)
    layers = _linear4bit(module.policy)
    assert len(layers) == 14  # 7 projections in each of the 2 layers; the head stays full precision
    assert all(layer.weight.dtype == torch.uint8 for layer in layers)

    # The sanity check's eval-mode, no-grad forward would repack the weights for inference on an AVX512-BF16
    # CPU (see prepare_for_kbit_training); it must not have.
    assert probe.repacked == [False, False]
    first, second = probe.gradients
    lora_b = [n for n in first if "lora_B" in n]
    assert len(lora_b) == 14 and all(first[n].abs().sum() > 0 for n in lora_b)
    assert all(second[n].abs().sum() > 0 for n in second if "lora_A" in n)  # B moved, so A learns too
    assert all(p.abs().sum() > 0 for n, p in module.named_parameters() if "lora_B" in n)

    # The gradients are those of a run that never validated: evaluation changed nothing about training.
    _, unvalidated = _fit(tmp_path / "without_sanity", sanity_steps=0)
    for name, grad in unvalidated.gradients[0].items():
        assert_close(first[name], grad, msg=name)
    assert (tmp_path / "with_sanity" / "hf" / "adapter_model.safetensors").is_file()


def test_quantization_needs_lora_and_can_be_switched_off():
    with pytest.raises(ValueError, match="needs a LoRA adapter"):
        SFTModule(str(TINY_MODEL), quantization=QUANTIZATION)
    assert SFTModule(str(TINY_MODEL), quantization=QuantizationSettings(load_in_4bit=False)).quantization is None
    with pytest.raises(ValueError, match="compute_dtype"):
        QuantizationSettings(compute_dtype="int4").to_transformers()


def test_default_reference_is_the_4bit_policy_without_its_adapter():
    module = _module()
    assert module.reference_mode == "adapter_off" and isinstance(module.reference, AdapterOffReference)


def test_copy_reference_is_a_second_4bit_load(batch):
    module = _module(reference="copy")
    module.configure_model()
    reference = module.reference.model
    assert len(_linear4bit(reference)) == 14 and not reference.training
    assert not any(p.requires_grad for p in reference.parameters())
    assert not {id(p) for p in reference.parameters()} & {id(p) for p in module.policy.parameters()}
    loss, _ = module.loss(module.compute_logps(batch))
    assert_close(loss, torch.tensor(math.log(2)), atol=1e-6, rtol=0)  # same weights, same computation


def test_gradient_checkpointing_gives_the_same_lora_gradients(batch):
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        module = _module(reference="none", gradient_checkpointing=checkpointing)
        module.configure_model()
        module.loss(module.compute_logps(batch))[0].backward()
        gradients.append({n: p.grad for n, p in module.named_parameters() if "lora_B" in n})
    assert module.policy.base_model.model.model.gradient_checkpointing
    assert all(g.abs().sum() > 0 for g in gradients[0].values())
    for name, grad in gradients[0].items():
        assert_close(gradients[1][name], grad, msg=name)


def test_checkpoints_hold_the_adapter_and_load_strictly():
    module = _module()
    module.configure_model()
    checkpoint = {"state_dict": module.state_dict()}
    assert any(k.endswith(".absmax") for k in checkpoint["state_dict"])  # bitsandbytes' extra keys
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
