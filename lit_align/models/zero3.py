"""DeepSpeed ZeRO stage 3 for models that ``from_pretrained`` loads, and the way back to whole weights.

Under stage 3 Lightning runs ``configure_model`` inside ``deepspeed.zero.Init``: every parameter is cut into
per-rank pieces the moment its module is built, and a parameter outside a forward pass is an empty tensor.
transformers copes only when it knows: with a ``HfDeepSpeedConfig`` alive it initialises and loads the
checkpoint one gathered module at a time; without one its weight initialisation indexes an empty tensor.
``zero3_loading`` makes it know for the length of the load, and no longer, so a model loaded later (the
one-off reference of ``reference: precomputed``) is an ordinary whole model again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def zero3_config(strategy) -> dict | None:
    """The DeepSpeed config of ``strategy`` when it is a ZeRO stage 3 ``DeepSpeedStrategy``, else ``None``."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    if isinstance(strategy, DeepSpeedStrategy) and strategy.zero_stage_3:
        return strategy.config
    return None


@contextmanager
def zero3_loading(config: dict | None) -> Iterator[None]:
    """Inside, ``from_pretrained`` builds and loads partitioned (ZeRO-3) models; a no-op when ``config`` is
    ``None``."""
    if config is None:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    hf_config = HfDeepSpeedConfig(config)  # transformers keeps only a weak reference: hold it for the load
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
        del hf_config


def is_partitioned(module: nn.Module) -> bool:
    """Whether ``module`` holds ZeRO-3 partitioned parameters."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def full_numel(parameter: torch.Tensor) -> int:
    """Element count of a parameter, whole even when ZeRO-3 has partitioned it."""
    return getattr(parameter, "ds_numel", parameter.numel())


def gathered_state_dict(model: nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole weights of a ZeRO-3 partitioned ``model`` on CPU, on rank zero (other ranks get ``{}``).

    A collective: every rank must call it. Parameters are gathered one at a time, so no rank ever holds more
    than one whole tensor beyond its partition. ``trainable_only`` gathers only the trainable parameters (a
    LoRA adapter). Tied parameters come back as one tensor under each of their names, as ``save_pretrained``
    expects; persistent buffers, never partitioned, are copied as they are.
    """
    import deepspeed

    keep = torch.distributed.get_rank() == 0
    state: dict[str, torch.Tensor] = {}
    gathered: dict[int, torch.Tensor] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if trainable_only and not parameter.requires_grad:
            continue
        if id(parameter) not in gathered:
            with deepspeed.zero.GatheredParameters([parameter], modifier_rank=None):
                gathered[id(parameter)] = parameter.detach().cpu().clone() if keep else torch.empty(0)
        if keep:
            state[name] = gathered[id(parameter)]
    if keep and not trainable_only:
        for name, value in model.state_dict().items():
            state.setdefault(name, value.detach().cpu())
    return state


def reset_lora_weights(model: nn.Module) -> None:
    """Give the LoRA layers of a partitioned model PEFT's starting values: ``A`` as ``nn.Linear`` draws it and
    ``B = 0``, so the adapter starts as a no-op and the policy equals its reference at step 0.

    Layers that PEFT adds inside ``deepspeed.zero.Init`` are partitioned as soon as they are built, so PEFT's own
    initialisation writes into empty tensors and ``B`` keeps ``nn.Linear``'s random draw. Here each layer's
    weights are gathered, set on rank zero, and scattered back from there. A collective: every rank calls it.
    """
    import deepspeed
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.lora_A:
            params = [*module.lora_A[adapter].parameters(), *module.lora_B[adapter].parameters()]
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                if torch.distributed.get_rank() == 0:
                    module.reset_lora_parameters(adapter, True)
