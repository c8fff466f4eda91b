"""FSDP2 loading across two real CPU ranks (gloo): rank zero alone reads the checkpoint, rank one builds an
empty model and receives its shards, and both end up with exactly the weights a plain load gives."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank: int, port: int) -> None:
    import transformers

    from lit_align.models.loading import ModelSettings, load_causal_lm
    from lit_align.models.sharding import check_same_layout, full_state_dict
    from lit_align.modules import PreferenceModule
    from tests.conftest import TINY_MODEL

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        reads = []
        real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained.__func__

        def counting(cls, *args, **kwargs):
            reads.append(args[0])
            return real_from_pretrained(cls, *args, **kwargs)

        transformers.AutoModelForCausalLM.from_pretrained = classmethod(counting)
        module = PreferenceModule(str(TINY_MODEL), reference="copy")
        module._device_mesh = init_device_mesh("cpu", (2,))
        module.configure_model()
        assert len(reads) == (1 if rank == 0 else 0), reads  # the reference is a copy, not a second read

        expected = load_causal_lm(str(TINY_MODEL), vocab_size=len(module.tokenizer))
        for model in (module.policy, module.reference.model):
            for name, parameter in model.named_parameters():
                # each rank's shard is its slice of the original weight
                torch.testing.assert_close(parameter.full_tensor(), expected.get_parameter(name), rtol=0, atol=0)
            for name, buffer in model.named_buffers():  # rotary inv_freq is not in the state dict
                torch.testing.assert_close(buffer, expected.get_buffer(name), rtol=0, atol=0)
            state = full_state_dict(model)
            if rank == 0:
                assert state.keys() == expected.state_dict().keys()

        settings = ModelSettings(str(TINY_MODEL), dtype="bfloat16" if rank == 1 else "float32")
        mismatched = load_causal_lm(settings, empty=True)
        with pytest.raises(RuntimeError, match="rank 1 built a different model than rank 0"):
            check_same_layout(mismatched, "policy")
        dist.barrier()  # neither rank tears its process group down while the other still talks to it
    finally:
        dist.destroy_process_group()
    # Skip the interpreter's teardown: gloo's threads then and there have aborted a passing run once (SIGABRT,
    # "terminate called without an active exception"). A failure above still raises and reaches mp.spawn.
    os._exit(0)


def test_rank_one_receives_its_shards_from_rank_zero():
    mp.spawn(_two_ranks, args=(_free_port(),), nprocs=2, join=True)
