"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the models lit_align trains, and the way back to one
full state dict for the Hugging Face export.

Each transformer block is its own shard group and the whole model is the root group above them: a forward
all-gathers one block at a time, so a rank holds its shards plus one full block, and the root group keeps the
embedding and the LM head together, as tied weights need. Blocks are found by the class names transformers
lists in ``_no_split_modules`` (the ones ``device_map`` never splits), else by names ending in
``DecoderLayer``; inside a ``PeftModel`` they are the same modules, with the LoRA layers within them.

lit_align applies no tensor parallelism, so every rank of the strategy's device mesh shards: a 2-D mesh
(Lightning's ``data_parallel`` x ``tensor_parallel``) is used as one flat group.
"""

from __future__ import annotations

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a causal LM, plain or wrapped by PEFT, in model order."""
    block_names: set[str] = set()
    for module in model.modules():
        block_names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in block_names]
    return layers or [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def flat_mesh(mesh):
    """A 1-D mesh over every rank of ``mesh`` (the mesh itself when it is already 1-D)."""
    from torch.distributed.device_mesh import init_device_mesh

    if mesh.ndim == 1:
        return mesh
    return init_device_mesh(mesh.device_type, (mesh.size(),), mesh_dim_names=("shard",))


def mixed_precision_policy(precision: str | None):
    """bf16 compute with fp32 gradient reduction when the trainer's precision is a bf16 one; ``None`` (the
    weights' own dtype throughout) otherwise, e.g. ``32-true`` on the CPU."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision is not None and str(precision).startswith("bf16"):
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return None


def shard_model(model: nn.Module, mesh, precision: str | None = None) -> None:
    """``fully_shard`` every decoder layer, then the whole model, over ``mesh`` (in place)."""
    from torch.distributed.fsdp import fully_shard

    layers = decoder_layers(model)
    if not layers:
        raise ValueError(
            f"found no decoder layers in {type(model).__name__} to shard (no `_no_split_modules` and no module "
            "class ending in DecoderLayer)"
        )
    kwargs = {"mesh": flat_mesh(mesh)}
    policy = mixed_precision_policy(precision)
    if policy is not None:
        kwargs["mp_policy"] = policy
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)


def is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (a shard, under FSDP2 or tensor parallelism)."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is a DTensor."""
    return any(is_dtensor(p) for p in module.parameters())


def full_state_dict(model: nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded state dict of a sharded ``model`` on CPU, on rank zero (other ranks get ``{}``).

    A collective: every rank must call it. ``trainable_only`` gathers only the trainable parameters (a LoRA
    adapter), never the frozen base.
    """
    if trainable_only:
        # Not get_model_state_dict(ignore_frozen_params=True): it still gathers a frozen LM head tied to the
        # embedding.
        keep = torch.distributed.get_rank() == 0
        state = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                full = parameter.full_tensor() if is_dtensor(parameter) else parameter
                if keep:
                    state[name] = full.detach().cpu()
        return state
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # Tied weights (embedding and LM head) come back as two copies; one tensor again lets save_pretrained
    # recognise the tie and write it once.
    first_name: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        first = first_name.setdefault(id(parameter), name)
        if first != name and name in state and first in state:
            state[name] = state[first]
    return state


def layout(model: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
    """Name, dtype and shape of every parameter and buffer: what two ranks' copies of a model must agree on."""
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
    return [(name, str(t.dtype), tuple(t.shape)) for name, t in tensors]


def check_same_layout(model: nn.Module, what: str) -> None:
    """Raise on every rank when the ranks' copies of ``model`` differ in any name, dtype or shape (an empty
    model built from the config must match the one rank zero loaded). A collective."""
    import torch.distributed as dist

    mine = layout(model)
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    for rank, theirs in enumerate(everyone):
        if theirs != everyone[0]:
            diff = next(((a, b) for a, b in zip(everyone[0], theirs, strict=False) if a != b), "a different count")
            raise RuntimeError(
                f"{what}: rank {rank} built a different model than rank 0 loaded ({diff}); FSDP2 needs the same "
                "layout on every rank. Pass an explicit model.init_args.dtype."
            )


def load_from_rank_zero(model: nn.Module, full_state: dict[str, torch.Tensor] | None, device: torch.device) -> None:
    """Fill a sharded ``model`` with the weights that rank zero holds whole (``full_state``, its state dict from
    before sharding; ``None`` on the other ranks, whose models are empty on the meta device).

    The other ranks allocate their shards on ``device`` and receive them tensor by tensor, so the checkpoint is
    read once per job and no rank but zero ever holds the whole model. Buffers, never sharded (and the rotary
    ``inv_freq`` is not even in the state dict), are broadcast whole. A collective.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if full_state is None:
        model.to_empty(device=device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full_state or {}, options=options)
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
