"""End to end: the DPO quickstart under DDP, FSDP2 and DeepSpeed ZeRO-2 and ZeRO-3, two CPU processes each,
switched by ``--config configs/strategy/<name>.yaml`` alone.

The three strategies compute the same thing, so their loss curves must agree with each other (to float
rounding), a resumed run must agree with an uninterrupted one, and every run's ``hf/`` must load.

Lightning refuses DeepSpeed without CUDA; ``CPUDeepSpeedStrategy`` below, for tests only, skips those checks
so ZeRO-2 and ZeRO-3 run on DeepSpeed's CPU accelerator (gloo). The shipped fragments stay the GPU ones.
"""

from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy

from lit_align.strategies import DeepSpeedStrategy
from lit_align.tensorboard import read_scalars

from .test_quickstart import ROOT, _fit

pytestmark = pytest.mark.slow
QUICKSTART = "configs/quickstart/dpo.yaml"
CPU = ("--trainer.accelerator=cpu", "--trainer.devices=2")  # after the strategy's --config, which says auto
SIX_STEPS = ("--trainer.max_steps=6", "--trainer.val_check_interval=3", "--data.max_val_examples=16")
STOP_AT_3 = '--trainer.callbacks+={"class_path": "tests.e2e.test_resume.StopAtStep", "init_args": {"step": 3}}'
DEEPSPEED = (
    "--config", str(ROOT / "configs/strategy/deepspeed_zero2.yaml"),
    f"--trainer.strategy.class_path={__name__}.CPUDeepSpeedStrategy",
)  # fmt: skip
ZERO3 = (
    "--config", str(ROOT / "configs/strategy/deepspeed_zero3.yaml"),
    f"--trainer.strategy.class_path={__name__}.CPUDeepSpeedStrategy",
)  # fmt: skip
FULL_MODEL = ("--model.init_args.lora=null", "--model.init_args.optimizer.init_args.lr=1e-4")


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """lit_align's (Lightning's) DeepSpeedStrategy without its CUDA-only checks. Test use only.

    ``DeepSpeedStrategy.setup_environment`` raises unless the accelerator is ``CUDAAccelerator``, and its
    ``setup_distributed`` requires device indices 0..n-1, which CPU devices do not have. DeepSpeed itself reads
    ``root_device.index`` as the rank's device number (``None`` on the CPU breaks ``deepspeed.initialize``);
    its CPU accelerator has the one device ``cpu`` under any number.
    """

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # the grandparent: process group, no accelerator check

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu", 0)


def _losses(run: Path) -> list[tuple[int, float]]:
    return read_scalars(run)["train/loss"]


def _assert_same_curve(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> None:
    assert [step for step, _ in a] == [step for step, _ in b] == list(range(6))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-5, (a, b)


def _stopped_and_resumed(save_dir: Path, *strategy: str) -> list[tuple[int, float]]:
    """Six steps as two runs: stopped after step 3 (its checkpoint a directory for FSDP2 and DeepSpeed), then
    resumed from that checkpoint. Returns the joined loss curve."""
    first = _fit(QUICKSTART, save_dir / "first", *strategy, *CPU, *SIX_STEPS, STOP_AT_3)
    checkpoint = first / "checkpoints" / "last.ckpt"
    second = _fit(QUICKSTART, save_dir / "second", *strategy, *CPU, *SIX_STEPS, f"--ckpt_path={checkpoint}")
    return _losses(first) + _losses(second)


def _saved_weights(checkpoint: Path) -> set[str]:
    """Names of the weights in DeepSpeed's model-state files (which hold pickled configs: not weights-only),
    but the LM head: DeepSpeed's exclude_frozen_parameters misses a frozen weight under its second (tied) name."""
    names = set()
    for path in (checkpoint / "checkpoint").glob("*model_states.pt"):
        names |= set(torch.load(path, map_location="cpu", weights_only=False)["module"] or {})
    return {name for name in names if not name.endswith("lm_head.weight")}


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(run / "hf")
    return {name: p.detach() for name, p in model.named_parameters() if "lora_" in name}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    strategy = ("--config", str(ROOT / "configs/strategy/ddp.yaml"))
    return _fit(QUICKSTART, tmp_path_factory.mktemp("ddp"), *strategy, *CPU, *SIX_STEPS)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> Path:
    strategy = ("--config", str(ROOT / "configs/strategy/fsdp.yaml"))
    return _fit(QUICKSTART, tmp_path_factory.mktemp("fsdp"), *strategy, *CPU, *SIX_STEPS)


def test_ddp(ddp_run):
    scalars = read_scalars(ddp_run)
    assert [step for step, _ in scalars["val/rewards/accuracies"]] == [0, 2, 5]
    assert any(p.abs().sum() > 0 for name, p in _adapter(ddp_run).items() if "lora_B" in name)


def test_fsdp2_trains_as_ddp_does_and_exports_the_same_adapter(fsdp_run, ddp_run):
    scalars = read_scalars(fsdp_run)
    assert [step for step, _ in scalars["val/rewards/accuracies"]] == [0, 2, 5]
    _assert_same_curve(_losses(fsdp_run), _losses(ddp_run))
    assert (fsdp_run / "checkpoints" / "last.ckpt").is_dir()  # one shard file per rank
    sharded, replicated = _adapter(fsdp_run), _adapter(ddp_run)  # gathered on rank zero vs saved as it was
    assert sharded.keys() == replicated.keys()
    # FSDP2 reduce-scatters gradients in another order than DDP's all-reduce, so they differ by float rounding;
    # AdamW divides each gradient by its own running scale, which turns a rounding difference on a near-zero
    # gradient into a visible one (4.1e-5 on one of 2048 elements, torch 2.13 on CPU). Within a tenth of one
    # step's size (lr 2e-3) the exports are the same training.
    for name, tensor in sharded.items():
        torch.testing.assert_close(tensor, replicated[name], rtol=1e-4, atol=2e-4)


def test_fsdp2_resume_matches_uninterrupted(fsdp_run, tmp_path):
    from torch.distributed.checkpoint import FileSystemReader

    strategy = ("--config", str(ROOT / "configs/strategy/fsdp.yaml"))
    _assert_same_curve(_stopped_and_resumed(tmp_path, *strategy), _losses(fsdp_run))
    first = next((tmp_path / "first").glob("*/version_*"))
    keys = FileSystemReader(first / "checkpoints" / "last.ckpt").read_metadata().state_dict_metadata
    weights = [key for key in keys if key.startswith("state_dict.")]
    assert weights and all("lora_" in key for key in weights), weights[:5]  # the adapter, not the base model


def test_fsdp2_shards_the_reference_copy_and_exports_a_full_model(tmp_path):
    from transformers import AutoModelForCausalLM

    run = _fit(
        QUICKSTART, tmp_path, "--config", str(ROOT / "configs/strategy/fsdp.yaml"), *CPU,
        "--model.init_args.lora=null", "--model.init_args.optimizer.init_args.lr=1e-4",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--data.max_val_examples=16",
    )  # fmt: skip
    first_step, first_loss = _losses(run)[0]  # policy == sharded reference copy at step 0: log 2
    assert first_step == 0 and first_loss == pytest.approx(0.6931472, abs=1e-5)
    exported = AutoModelForCausalLM.from_pretrained(run / "hf")
    original = AutoModelForCausalLM.from_pretrained(ROOT / "assets" / "tiny-chat")
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(exported.state_dict()[name], original.state_dict()[name])
    assert exported.lm_head.weight is exported.model.embed_tokens.weight  # still tied


def test_deepspeed_zero2_trains_as_ddp_does_and_resumes(ddp_run, tmp_path):
    pytest.importorskip("deepspeed")
    resumed = _stopped_and_resumed(tmp_path, *DEEPSPEED)
    _assert_same_curve(resumed, _losses(ddp_run))
    first = next((tmp_path / "first").glob("*/version_*"))
    assert (first / "checkpoints" / "last.ckpt" / "checkpoint").is_dir()  # DeepSpeed's own layout
    saved = _saved_weights(first / "checkpoints" / "last.ckpt")  # the adapter alone: frozen weights left out
    assert saved and all("lora_" in name for name in saved), sorted(saved)[:5]
    second = next((tmp_path / "second").glob("*/version_*"))
    assert "val/rewards/accuracies" in read_scalars(second) and _adapter(second)


def test_deepspeed_zero2_checkpoint_with_a_reference_copy_resumes(tmp_path):
    pytest.importorskip("deepspeed")
    full_model = FULL_MODEL
    short = ("--trainer.val_check_interval=2", "--data.max_val_examples=16")
    first = _fit(QUICKSTART, tmp_path / "first", *DEEPSPEED, *CPU, *full_model, *short, "--trainer.max_steps=2")
    checkpoint = first / "checkpoints" / "last.ckpt"
    second = _fit(
        QUICKSTART, tmp_path / "second", *DEEPSPEED, *CPU, *full_model, *short, "--trainer.max_steps=3",
        f"--ckpt_path={checkpoint}",
    )  # fmt: skip
    assert [step for step, _ in _losses(second)] == [2]


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory) -> Path:
    pytest.importorskip("deepspeed")
    return _fit(QUICKSTART, tmp_path_factory.mktemp("zero3"), *ZERO3, *CPU, *SIX_STEPS)


def test_deepspeed_zero3_lora_starts_at_its_reference_and_exports_the_adapter(zero3_run):
    # ZeRO-3 partitions the LoRA layers as PEFT builds them; B must still start at 0 (policy == reference).
    scalars = read_scalars(zero3_run)
    first_step, first_loss = _losses(zero3_run)[0]
    assert first_step == 0 and first_loss == pytest.approx(0.6931472, abs=1e-6)
    assert scalars["val/rewards/margins"][0] == (0, 0.0)
    assert [step for step, _ in scalars["val/rewards/accuracies"]] == [0, 2, 5]
    assert scalars["val/loss"][-1][1] < 0.6931472  # learning
    adapter = _adapter(zero3_run)  # gathered from both ranks' partitions
    assert adapter and all(p.numel() > 0 for p in adapter.values())
    assert any(p.abs().sum() > 0 for name, p in adapter.items() if "lora_B" in name)


def test_deepspeed_zero3_resume_matches_uninterrupted(zero3_run, tmp_path):
    _assert_same_curve(_stopped_and_resumed(tmp_path, *ZERO3), _losses(zero3_run))
    first = next((tmp_path / "first").glob("*/version_*"))
    saved = _saved_weights(first / "checkpoints" / "last.ckpt")
    assert saved and all("lora_" in name for name in saved), sorted(saved)[:5]


def test_deepspeed_zero3_full_model_with_a_reference_copy_trains_as_ddp_does(tmp_path):
    from transformers import AutoModelForCausalLM

    pytest.importorskip("deepspeed")
    short = (*FULL_MODEL, "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--data.max_val_examples=16")
    ddp = _fit(QUICKSTART, tmp_path / "ddp", "--config", str(ROOT / "configs/strategy/ddp.yaml"), *CPU, *short)
    zero3 = _fit(QUICKSTART, tmp_path / "zero3", *ZERO3, *CPU, *short)
    a, b = _losses(zero3), _losses(ddp)
    assert [step for step, _ in a] == [step for step, _ in b] == [0, 1, 2]
    assert a[0][1] == pytest.approx(0.6931472, abs=1e-6)  # the reference is a second partitioned load
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) <= 1e-5, (a, b)
    exported = AutoModelForCausalLM.from_pretrained(zero3 / "hf")  # gathered, one tensor at a time
    replicated = AutoModelForCausalLM.from_pretrained(ddp / "hf")
    assert exported.lm_head.weight is exported.model.embed_tokens.weight  # still tied
    for name, tensor in exported.state_dict().items():
        torch.testing.assert_close(tensor, replicated.state_dict()[name], rtol=1e-4, atol=1e-5)
