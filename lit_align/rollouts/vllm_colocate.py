"""Optional vLLM sampling for RL, in the training process on the training GPU (TRL's ``vllm_mode: colocate``).

Sampling G completions per prompt with ``generate`` is most of an RL step's time: transformers decodes one
token per forward pass with no paged KV cache. A vLLM engine on the same GPU samples several times faster,
at the price of a second copy of the weights and a share of GPU memory (``gpu_memory_utilization``) for its
KV cache, and of keeping that copy current: after every optimizer step the policy's weights are pushed into
the engine (`VLLMColocate.sync_weights`), with a LoRA adapter merged in, so vLLM samples from the policy being
trained, not from the checkpoint it loaded. Colocation avoids TRL's other mode, a vLLM server on GPUs of its
own, which leaves one side idle while the other works.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) under vLLM's ``external_launcher``
executor, as TRL's colocate mode does: its model is then an ordinary object here, and ``LLM.apply_model`` hands
it the weights without serialising them. Under DDP each rank builds its own engine on its own GPU, and joins
the ``torch.distributed`` rendezvous the trainer set up.

Kept thin on purpose: one GPU per engine (no tensor parallelism), no sleep mode, no ZeRO-3 or FSDP gathering,
no 4-bit (QLoRA) base weights. What is tested, and what is not (this project's machines have no GPU and no
vLLM): `check_vllm_available` refusing a machine without CUDA, and `merged_state_dict` on a real tiny PEFT
model (merged values, plain names, the adapter unmerged afterwards) are tested for real. The vLLM side,
``LLM(...)``, ``generate`` and ``apply_model(load_weights)``, is written against vLLM's API as documented for
the versions TRL 1.16 supports (0.22 to 0.31) and is exercised only against a stand-in object that checks what
we pass and how we read the result; it has not run against a real engine here.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lit_align.checks import ConfigError, check_at_least, check_between
from lit_align.models.zero3 import is_partitioned
from lit_align.rollouts.sampling import SamplingSettings

SETTING = "model.init_args.use_vllm"
# Prefixes that wrappers add to parameter names, which a checkpoint (and so vLLM) does not have.
_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")


def check_vllm_available() -> None:
    """Refuse ``use_vllm: true`` where it cannot work, before any model or data loads."""
    problems = []
    if not torch.cuda.is_available():
        problems.append("no CUDA GPU is visible (torch.cuda.is_available() is False), and vLLM samples on the GPU")
    if importlib.util.find_spec("vllm") is None:
        problems.append('vllm is not installed (pip install -e ".[vllm]")')
    if problems:
        raise ConfigError(
            f"{SETTING} is true, but {'; and '.join(problems)}. Set {SETTING}: false to sample with the policy's "
            f"own generate instead."
        )


@contextmanager
def plain_weights(policy: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, the policy's weights under the names of a plain transformers checkpoint, with a PEFT
    adapter merged in; the tensors are the policy's own storage, valid only inside. Leaving the block unmerges
    the adapter, also when the block raised, so training resumes on the unmerged weights.

    Names lose PEFT's ``base_model.model.`` and ``.base_layer``; the adapter's own tensors (``lora_A``...) and
    the frozen originals of ``modules_to_save`` are dropped, the trained copies take the plain name."""
    if is_partitioned(policy):
        raise ConfigError(
            f"{SETTING} does not support DeepSpeed ZeRO stage 3: the weights are split across ranks and would "
            f"have to be gathered on every step. Use ZeRO stage 2, DDP or one GPU, or set {SETTING}: false."
        )
    if any(type(p).__name__ == "Params4bit" for p in policy.parameters()):
        raise ConfigError(
            f"{SETTING} does not support 4-bit (QLoRA) base weights: vLLM would need them dequantised on every "
            f"step. Remove model.init_args.quantization or set {SETTING}: false."
        )
    if not _is_peft(policy):
        yield {_strip_wrappers(name): tensor for name, tensor in policy.state_dict().items()}
        return
    with torch.no_grad():
        policy.merge_adapter()
    try:
        yield _merged_names(policy)
    finally:
        with torch.no_grad():
            policy.unmerge_adapter()


def merged_state_dict(policy: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the policy's sampling weights: plain transformers names, any LoRA adapter merged
    (``W + scale * B @ A``), the keys of the plain model's ``state_dict``. The policy is left as it was."""
    with plain_weights(policy) as weights:
        return {name: tensor.detach().clone() for name, tensor in weights.items()}


def _is_peft(policy: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(policy, PeftModel)


def _merged_names(policy: nn.Module) -> dict[str, torch.Tensor]:
    adapter_prefix = f".{policy.base_model.prefix}"  # ".lora_" for LoRA
    active = policy.active_adapter
    weights = {}
    for name, tensor in policy.state_dict().items():
        name = _strip_wrappers(name.removeprefix("base_model.model."))
        if adapter_prefix in name or ".original_module." in name:
            continue
        if ".modules_to_save." in name:
            if f".modules_to_save.{active}." not in name:
                continue  # another adapter's trained copy
            name = name.replace(f".modules_to_save.{active}.", ".")
        weights[name.replace(".base_layer.", ".")] = tensor
    return weights


def _strip_wrappers(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def sampling_kwargs(n: int, sampling: SamplingSettings) -> dict:
    """vLLM ``SamplingParams`` arguments for ``n`` completions per prompt. ``top_k`` 0 ("keep all") becomes -1,
    which every vLLM version reads so; EOS ends a completion and stays in its token ids, vLLM's default."""
    check_at_least("num_generations", n, 1)
    return {
        "n": n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "max_tokens": sampling.max_completion_length,
    }


def completion_ids(outputs: list, n: int) -> list[list[int]]:
    """Token ids of every completion from vLLM's ``RequestOutput`` list, grouped by prompt (all ``n`` of prompt
    0 first), each prompt's in the order of their ``index``."""
    grouped = []
    for request in outputs:
        completions = sorted(request.outputs, key=lambda completion: completion.index)
        if len(completions) != n:
            raise RuntimeError(f"vLLM returned {len(completions)} completions for a prompt, expected {n}")
        grouped.extend(list(completion.token_ids) for completion in completions)
    return grouped


class VLLMColocate:
    """A vLLM engine in this process that samples completions from token ids, kept in step with the policy."""

    def __init__(
        self,
        model_name_or_path: str,
        *,
        max_model_len: int,
        gpu_memory_utilization: float = 0.3,
        dtype: str | None = None,
        seed: int = 0,
    ) -> None:
        """``max_model_len``: longest prompt plus ``max_completion_length``. ``gpu_memory_utilization``: the share
        of the GPU vLLM takes for its weights and KV cache; training uses the rest. ``dtype``: vLLM's name
        (``bfloat16``), ``None`` for the checkpoint's. ``seed``: give each rank its own (``seed + rank``), or
        ranks sampling the same prompt draw the same completions."""
        check_at_least("max_model_len", max_model_len, 1)
        check_between("model.init_args.vllm_gpu_memory_utilization", gpu_memory_utilization, 0, 1, low_open=True)
        check_vllm_available()
        _prepare_in_process_engine()
        from vllm import LLM

        self._llm = LLM(
            model=model_name_or_path,
            dtype=dtype or "auto",
            seed=seed,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=1,
            distributed_executor_backend="external_launcher",
            # vLLM's default (tens of thousands of tokens per step) makes its memory profiling reserve more than
            # a colocated engine can have; TRL lowers it for the same reason.
            max_num_batched_tokens=4096,
        )

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[int]]:
        """``len(prompt_ids) * n`` completions as token-id lists, grouped by prompt (all ``n`` of prompt 0
        first); a completion that ended on EOS keeps it, one cut at ``max_completion_length`` does not."""
        from vllm import SamplingParams

        prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        params = SamplingParams(**sampling_kwargs(n, sampling))
        outputs = self._llm.generate(prompts, sampling_params=params, use_tqdm=False)
        return completion_ids(outputs, n)

    def sync_weights(self, policy: nn.Module) -> None:
        """Load the policy's current weights (adapter merged) into the engine, and forget cached prefixes, whose
        keys and values the old weights computed. Reads the policy in place: no second copy of the model."""
        with plain_weights(policy) as weights:
            items = list(weights.items())
            self._llm.apply_model(lambda model: model.load_weights(items))
        self._llm.reset_prefix_cache()


def _prepare_in_process_engine() -> None:
    """The environment vLLM's ``external_launcher`` executor reads: no engine subprocess, and this process's
    place in the ``torch.distributed`` world (rank 0 of 1 outside DDP, with a free local port to meet on)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(torch.distributed.get_world_size() if distributed else 1))
    os.environ.setdefault("LOCAL_RANK", str(torch.cuda.current_device()))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
