"""PreferenceGuidedDPOModule without a Trainer: guided batches, the loss at initialisation, soft prompt checks.

The instruction of ``guidance: text`` is a data setting (``AlignDataModule(guidance_text=...)``): the module reads
the batch's ``guided`` pairs and knows no text."""

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.losses import DPOLoss, ORPOLoss, PreferenceGuidedLoss
from lit_align.models import LoraSettings
from lit_align.modules.preference_guided import PreferenceGuidedDPOModule

from ..conftest import DEMO_DATA, TINY_MODEL

GUIDANCE = "Answer in the language of the user's question."
HIDDEN = 128  # assets/tiny-chat
LORA = LoraSettings(r=4, dropout=0.0)


@pytest.fixture(scope="module")
def data():
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="preference",
        batch_size=4,
        guidance_text=GUIDANCE,
    )
    data.setup()
    return data


@pytest.fixture(scope="module")
def batch(data):
    return next(iter(data.train_dataloader()))


@pytest.fixture
def soft_prompt(tmp_path):
    path = tmp_path / "soft_prompt.pt"
    torch.save(torch.randn(4, HIDDEN, generator=torch.Generator().manual_seed(0)), path)
    return path


def _module(**kwargs) -> PreferenceGuidedDPOModule:
    module = PreferenceGuidedDPOModule(str(TINY_MODEL), **kwargs)
    module.configure_model()
    return module


def test_guided_rows_hold_the_instruction_and_plain_rows_do_not(data, batch):
    assert batch.guided.num_pairs == batch.num_pairs
    for guided, plain in zip(batch.guided.input_ids, batch.input_ids, strict=True):
        assert GUIDANCE in data.tokenizer.decode(guided) and GUIDANCE not in data.tokenizer.decode(plain)


def test_text_mode_at_initialisation_with_lora(batch):
    module = _module(lora=LORA, loss=PreferenceGuidedLoss(beta=0.3, alpha=0.5))
    assert module.guidance == "text" and module.reference_mode == "adapter_off"
    logps = module.compute_logps(batch)
    loss, metrics = module.loss(logps)
    # The LoRA update starts at zero: guided policy == guided reference, so DPO is exactly log 2 ...
    assert_close(metrics["loss_components/dpo_loss"], torch.tensor(math.log(2)), atol=1e-6, rtol=0)
    assert metrics["rewards/accuracies"] == 0 and metrics["rewards/margins"] == 0
    # ... while the instruction changes the preference gap, so the consistency term is not zero.
    h_guided = logps.policy_chosen - logps.policy_rejected
    h_plain = logps.plain_policy_chosen - logps.plain_policy_rejected
    assert not torch.allclose(h_guided, h_plain)
    assert_close(metrics["loss_components/aligned_loss"], ((h_plain - h_guided) ** 2).mean())
    assert_close(loss, math.log(2) + 0.5 * metrics["loss_components/aligned_loss"], atol=1e-5, rtol=0)
    assert_close(metrics["preference_metrics/pref_advantage_ratio"], (h_guided > h_plain).float().mean())
    assert_close(metrics["logps/chosen"], logps.policy_chosen.mean())  # DPO metrics come from the guided pass
    assert set(metrics) >= {"rewards/chosen", "rewards/rejected", "logps/rejected", "loss_components/dpo_loss"}


def test_a_training_step_moves_the_plain_gap_towards_the_guided_one(batch):
    module = _module(reference="copy", loss=PreferenceGuidedLoss(beta=0.1, alpha=1.0))
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    _, before = module.loss(module.compute_logps(batch))
    for _ in range(3):
        optimizer.zero_grad()
        module.loss(module.compute_logps(batch)).loss.backward()
        optimizer.step()
    _, after = module.loss(module.compute_logps(batch))
    assert after["loss_components/aligned_loss"] < before["loss_components/aligned_loss"]


def test_the_default_loss_is_preference_guided_dpo():
    module = PreferenceGuidedDPOModule(str(TINY_MODEL))
    assert isinstance(module.loss, PreferenceGuidedLoss) and module.loss.alpha == 0.01 and module.loss.beta == 0.1
    assert "loss" not in module.hparams and "guidance_text" not in module.hparams


def test_text_mode_needs_guided_batches(batch):
    module = _module(reference="none")
    with pytest.raises(ValueError, match=r"data\.guidance_text"):
        module.compute_logps(replace(batch, guided=None))


@pytest.mark.parametrize("guidance_text", [None, GUIDANCE], ids=["without", "with"])
def test_text_mode_checks_the_data_settings_at_setup(guidance_text, soft_prompt):
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="preference",
        guidance_text=guidance_text,
    )
    text = PreferenceGuidedDPOModule(str(TINY_MODEL))
    embedding = PreferenceGuidedDPOModule(str(TINY_MODEL), guidance="embedding", soft_prompt_path=str(soft_prompt))
    for module in (text, embedding):
        module._trainer = SimpleNamespace(datamodule=data)
    embedding.setup("fit")  # a soft prompt needs no instruction in the data
    if guidance_text is None:
        with pytest.raises(ValueError, match=r"set data\.guidance_text"):
            text.setup("fit")
    else:
        text.setup("fit")


def test_bad_settings_are_named(soft_prompt):
    with pytest.raises(ValueError, match="guidance: embedding"):
        PreferenceGuidedDPOModule(str(TINY_MODEL), soft_prompt_path=str(soft_prompt))
    with pytest.raises(ValueError, match="needs soft_prompt_path"):
        PreferenceGuidedDPOModule(str(TINY_MODEL), guidance="embedding")
    for loss in (ORPOLoss(), DPOLoss(loss_type="ipo")):  # neither reads the unguided log-probs
        with pytest.raises(ValueError, match="does not read the unguided log-probs"):
            PreferenceGuidedDPOModule(str(TINY_MODEL), loss=loss)
    with pytest.raises(TypeError, match="guidance_text"):
        PreferenceGuidedDPOModule(str(TINY_MODEL), guidance_text=GUIDANCE)  # a data setting now


@pytest.mark.parametrize("loss_type", ["ipo", "simpo"])
def test_preference_guided_loss_refuses_averaged_loss_types(loss_type):
    with pytest.raises(ValueError, match="summed log-probs"):
        PreferenceGuidedLoss(loss_type=loss_type)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ({"soft_prompt": torch.zeros(4, HIDDEN)}, "holds a dict, not a tensor"),
        (torch.zeros(HIDDEN), r"shape \(128,\)"),
        (torch.zeros(4, HIDDEN, dtype=torch.long), "torch.int64"),
        (b"not a torch file", "cannot be read"),
    ],
    ids=["missing", "dict", "1d", "integer", "garbage"],
)
def test_bad_soft_prompt_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad_prompt.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ValueError, match=message) as error:
        PreferenceGuidedDPOModule(str(TINY_MODEL), guidance="embedding", soft_prompt_path=str(path))
    assert str(path) in str(error.value)


def test_wrong_hidden_size_is_named_when_the_model_loads(tmp_path):
    path = tmp_path / "wide_prompt.pt"
    torch.save(torch.zeros(4, 2 * HIDDEN), path)
    module = PreferenceGuidedDPOModule(str(TINY_MODEL), guidance="embedding", soft_prompt_path=str(path))
    assert module.guidance == "embedding"
    with pytest.raises(ValueError, match=r"hidden size 128") as error:
        module.configure_model()
    assert str(path) in str(error.value)


@pytest.mark.parametrize("lora", [None, LORA], ids=["copy", "lora"])
def test_soft_prompt_changes_the_policy_and_the_reference_starts_with_it(batch, soft_prompt, lora):
    module = _module(guidance="embedding", soft_prompt_path=str(soft_prompt), lora=lora)
    assert module.reference_mode == ("adapter_off" if lora else "copy")
    logps = module.compute_logps(batch)
    assert not torch.allclose(logps.policy_chosen, logps.plain_policy_chosen)
    assert torch.equal(logps.chosen_tokens, (batch.chosen().labels[:, 1:] != -100).sum(-1))
    _, metrics = module.loss(logps)
    assert_close(metrics["loss_components/dpo_loss"], torch.tensor(math.log(2)), atol=1e-6, rtol=0)
    assert metrics["loss_components/aligned_loss"] > 0


def test_trainable_soft_prompt_gets_a_gradient_and_is_checkpointed(batch, soft_prompt, tmp_path):
    module = _module(guidance="embedding", soft_prompt_path=str(soft_prompt), train_soft_prompt=True, lora=LORA)
    start = module.soft_prompt.detach().clone()
    loss, _ = module.loss(module.compute_logps(batch))
    loss.backward()
    assert module.soft_prompt.grad is not None and module.soft_prompt.grad.abs().sum() > 0
    assert any(p is module.soft_prompt for p in module.parameters() if p.requires_grad)  # the optimizer sees it
    with torch.no_grad():
        module.soft_prompt.add_(1.0)
    assert torch.equal(module.reference_soft_prompt, start)  # the reference keeps the file's version
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert torch.equal(checkpoint["state_dict"]["soft_prompt"], start + 1.0)
    assert "reference_soft_prompt" not in checkpoint["state_dict"]
    module.export_pretrained(tmp_path / "hf")
    assert torch.equal(torch.load(tmp_path / "hf" / "soft_prompt.pt", weights_only=True), start + 1.0)


def test_frozen_soft_prompt_stays_out_of_training_and_checkpoints(batch, soft_prompt):
    module = _module(guidance="embedding", soft_prompt_path=str(soft_prompt), lora=LORA)
    module.loss(module.compute_logps(batch)).loss.backward()
    assert not module.soft_prompt.requires_grad and module.soft_prompt.grad is None
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert "soft_prompt" not in checkpoint["state_dict"]
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"], strict=True)
