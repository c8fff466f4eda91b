"""FSDP2 helpers on the tiny model in one process (a world of one): which layers are shard groups, the module's
sharding of policy and reference, and the full state dict the export writes."""

import socket

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from lit_align.models import LoraSettings
from lit_align.models.loading import add_lora, load_causal_lm
from lit_align.models.sharding import decoder_layers, full_state_dict, is_sharded, mixed_precision_policy, shard_model
from lit_align.modules import PreferenceModule

from ..conftest import TINY_MODEL


@pytest.fixture
def mesh():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    finally:
        dist.destroy_process_group()


def test_decoder_layers_plain_and_inside_peft():
    model = load_causal_lm(str(TINY_MODEL))
    layers = decoder_layers(model)
    assert layers == list(model.model.layers)  # LlamaDecoderLayer, from _no_split_modules
    wrapped = add_lora(model, LoraSettings(r=4))
    assert decoder_layers(wrapped) == layers  # the same modules, LoRA layers now inside them


def test_mixed_precision_only_for_bf16():
    assert mixed_precision_policy("32-true") is None and mixed_precision_policy(None) is None
    policy = mixed_precision_policy("bf16-mixed")
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32


def test_full_state_dict_of_a_sharded_model_equals_the_original(mesh):
    model = load_causal_lm(str(TINY_MODEL))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    shard_model(model, mesh)
    assert is_sharded(model)
    state = full_state_dict(model)
    assert state.keys() == original.keys()
    for name, tensor in original.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"]  # the tie survives, written once


def test_preference_module_shards_policy_and_reference_copy_and_checkpoints_leave_frozen_weights_out(mesh):
    module = PreferenceModule(str(TINY_MODEL), reference="copy", lora=LoraSettings(r=4))
    module._device_mesh = mesh
    module.configure_model()
    assert is_sharded(module.policy) and is_sharded(module.reference.model)
    checkpoint = {"state_dict": module.state_dict()}  # what distributed checkpointing saves and asks back for
    module.on_save_checkpoint(checkpoint)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert set(checkpoint["state_dict"]) == trainable and all("lora_" in k for k in trainable)
    assert not module.strict_loading  # the frozen keys are missing on load, by design
    module.on_load_checkpoint({"global_step": 3})  # FSDP2 and DeepSpeed: the strategy has loaded the weights


def test_lora_export_gathers_only_the_adapter(mesh):
    module = PreferenceModule(str(TINY_MODEL), lora=LoraSettings(r=4))
    module._device_mesh = mesh
    module.configure_model()
    state = full_state_dict(module.policy, trainable_only=True)
    assert state and all("lora_" in k for k in state)
