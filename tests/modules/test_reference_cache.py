"""``reference: precomputed``: the same loss as a live reference, no reference model while training, a cache that a
second run reuses, and keys that change with the data, the weights and the settings."""

import gc
import math
import tempfile
import weakref

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.testing import assert_close

from lit_align.data.batch import PreferenceBatch
from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.losses import DPOLoss
from lit_align.models import LoraSettings, ModelSettings
from lit_align.modules import PreferenceModule, reference_cache
from lit_align.modules.preference_guided import PreferenceGuidedDPOModule
from lit_align.modules.reference_cache import (
    PrecomputedReference,
    cache_key,
    examples_digest,
    load_reference_logps,
    model_fingerprint,
    save_reference_logps,
)

from ..conftest import DEMO_DATA, TINY_MODEL

LORA = LoraSettings(r=4, dropout=0.0)


def _data(**kwargs) -> AlignDataModule:
    val = DEMO_DATA / "dpo_val.jsonl"
    settings = dict(tokenizer=str(TINY_MODEL), task="preference", max_length=128, batch_size=8, max_val_examples=24)
    return AlignDataModule([DataSource(str(val))], val=[DataSource(str(val))], **{**settings, **kwargs})


def _trainer(max_steps: int = 2, callbacks=(), limit_val_batches: int | float = 0) -> Trainer:
    return Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=limit_val_batches,
        callbacks=list(callbacks),
        default_root_dir=tempfile.mkdtemp(prefix="lit_align_test_"),  # the hf/ export goes there, not into the repo
    )


class _Probe(Callback):
    """At the first training batch: which tables exist, whether any reference model is alive, parameter counts."""

    def __init__(self, loaded: list) -> None:
        self.loaded, self.seen = loaded, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.seen:
            return
        gc.collect()
        self.seen = {
            "tables": set(module.reference.tables),
            "reference_model": getattr(module.reference, "model", None),
            "parameters": sum(p.numel() for p in module.parameters()),
            "policy_parameters": sum(p.numel() for p in module.policy.parameters()),
            "loaded_alive": [ref() is not None for ref in self.loaded],
        }


@pytest.fixture
def count_passes(monkeypatch):
    """Counts the reference passes (one per split scored) and keeps weak references to loaded reference models."""
    counts = {"passes": 0, "loaded": []}
    score, prepare = reference_cache._score_split, PrecomputedReference.prepare

    def counting_score(*args, **kwargs):
        counts["passes"] += 1
        return score(*args, **kwargs)

    def tracking_prepare(self, splits, *, load, **kwargs):
        def tracking_load(name_or_path):
            model = load(name_or_path)
            counts["loaded"].append(weakref.ref(model))
            return model

        return prepare(self, splits, load=tracking_load, **kwargs)

    monkeypatch.setattr(reference_cache, "_score_split", counting_score)
    monkeypatch.setattr(PrecomputedReference, "prepare", tracking_prepare)
    return counts


@pytest.mark.parametrize(("lora", "live_mode"), [(None, "copy"), (LORA, "adapter_off")], ids=["full", "lora"])
def test_precomputed_trains_without_a_reference_and_matches_the_live_loss(tmp_path, count_passes, lora, live_mode):
    module = PreferenceModule(str(TINY_MODEL), lora=lora, reference="precomputed", reference_cache_dir=str(tmp_path))
    probe = _Probe(count_passes["loaded"])
    data = _data()
    _trainer(max_steps=2, callbacks=[probe]).fit(module, datamodule=data)

    # While training: both splits' tables, no reference model, no parameters beside the policy's.
    assert probe.seen["tables"] == {"train", "val"} and probe.seen["reference_model"] is None
    assert probe.seen["parameters"] == probe.seen["policy_parameters"]
    # Without LoRA a copy was loaded for the pass and is gone; with LoRA none was loaded at all.
    assert len(count_passes["loaded"]) == (1 if lora is None else 0) and not any(probe.seen["loaded_alive"])
    assert count_passes["passes"] == 2 and len(list(tmp_path.glob("ref_logps-*.safetensors"))) == 2

    # The trained policy against a live reference of the starting weights: the same loss on the same batch.
    live = PreferenceModule(str(TINY_MODEL), lora=lora, reference=live_mode)
    live.configure_model()
    live.policy.load_state_dict(module.policy.state_dict())
    module.eval(), live.eval()
    with torch.no_grad():
        for batch in (next(iter(data.train_dataloader())), next(iter(data.val_dataloader()))):
            precomputed, reference = module.compute_logps(batch), live.compute_logps(batch)
            assert_close(precomputed.reference_chosen, reference.reference_chosen, rtol=1e-6, atol=1e-5)
            assert_close(precomputed.reference_rejected, reference.reference_rejected, rtol=1e-6, atol=1e-5)
            loss, _ = module.loss(precomputed)
            live_loss, _ = live.loss(reference)
            assert_close(loss, live_loss, rtol=0, atol=1e-6)
            assert abs(loss.item() - math.log(2)) > 1e-4  # two steps moved the policy: a real comparison
            if batch.split == "val":  # the validation pass runs the validation loader's batches: bit for bit
                assert torch.equal(precomputed.reference_chosen, reference.reference_chosen)


def test_a_second_run_reuses_the_cache(tmp_path, count_passes, monkeypatch):
    # Lightning's logger does not propagate to caplog's handler when lightning is imported before pytest sets up
    # logging (running this file alone): record what the cache reports instead.
    messages = []
    monkeypatch.setattr(reference_cache, "rank_zero_info", messages.append)
    for run in range(2):
        module = PreferenceModule(
            str(TINY_MODEL), lora=LORA, reference="precomputed", reference_cache_dir=str(tmp_path)
        )
        _trainer(max_steps=1).fit(module, datamodule=_data())
        assert count_passes["passes"] == 2, f"run {run}"  # the second run scored nothing
    assert len(list(tmp_path.glob("ref_logps-*"))) == 2  # no temporary files left either
    assert sum("reused" in message for message in messages) == 2


def test_validate_scores_the_validation_split_and_fit_adds_the_training_split(tmp_path, count_passes):
    module = PreferenceModule(str(TINY_MODEL), lora=LORA, reference="precomputed", reference_cache_dir=str(tmp_path))
    data = _data()
    trainer = _trainer(max_steps=1, limit_val_batches=1.0)
    metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert set(module.reference.tables) == {"val"} and count_passes["passes"] == 1
    # Validation scores the validation loader's own batches, so at step 0 every reward is exactly 0, as with copy.
    assert metrics["val/loss"] == pytest.approx(math.log(2), abs=1e-6) and metrics["val/rewards/margins"] == 0
    trainer.fit(module, datamodule=data)
    assert set(module.reference.tables) == {"train", "val"} and count_passes["passes"] == 2


def test_preference_guided_reference_scores_the_guided_rows(tmp_path):
    module = PreferenceGuidedDPOModule(
        str(TINY_MODEL), lora=LORA, reference="precomputed", reference_cache_dir=str(tmp_path)
    )
    data = _data(guidance_text="请提供一个有用的回答。")  # the guided rows the reference scores
    _trainer(limit_val_batches=1.0).validate(module, datamodule=data, verbose=False)
    live = PreferenceGuidedDPOModule(str(TINY_MODEL), lora=LORA, reference="adapter_off")
    live.configure_model()
    live.policy.load_state_dict(module.policy.state_dict())
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        precomputed, reference = module.compute_logps(batch), live.compute_logps(batch)
    assert torch.equal(precomputed.reference_chosen, reference.reference_chosen)
    assert torch.equal(precomputed.reference_rejected, reference.reference_rejected)


def _batch(rows: int, **kwargs) -> PreferenceBatch:
    ids = torch.zeros(rows, 3, dtype=torch.long)
    return PreferenceBatch(ids, torch.ones_like(ids), ids, **kwargs)


def test_settings_and_batches_that_cannot_work_are_named(tmp_path):
    with pytest.raises(ValueError, match="reference_cache_dir is only used"):
        PreferenceModule(str(TINY_MODEL), reference="copy", reference_cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="reference-free"):
        PreferenceModule(str(TINY_MODEL), loss=DPOLoss(loss_type="simpo"), reference="precomputed")
    reference = PrecomputedReference(ModelSettings(str(TINY_MODEL)), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`index` and `split`"):
        reference.logps(_batch(2), score=None, policy=None)
    with pytest.raises(ValueError, match="'val' split"):
        reference.logps(_batch(2, index=torch.tensor([0]), split="val"), score=None, policy=None)


def test_lookup_gives_chosen_rows_then_rejected_rows(tmp_path):
    reference = PrecomputedReference(ModelSettings(str(TINY_MODEL)), cache_dir=str(tmp_path))
    reference.tables["train"] = ("key", torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]]))
    batch = _batch(4, index=torch.tensor([2, 0]), split="train")
    assert reference.logps(batch, score=None, policy=None).tolist() == [-5.0, -1.0, -6.0, -2.0]


def test_cache_files_round_trip_and_bad_files_are_ignored(tmp_path):
    path = tmp_path / "ref_logps-abc.safetensors"
    table = torch.randn(5, 2)
    save_reference_logps(path, table, {"split": "train"})
    assert torch.equal(load_reference_logps(path, 5), table) and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_reference_logps(path, 6) is None  # another split size: not this split's values
    path.write_bytes(b"not safetensors")
    assert load_reference_logps(path, 5) is None
    assert load_reference_logps(tmp_path / "missing.safetensors", 5) is None


def test_key_parts_change_with_the_data_and_the_weight_files(tmp_path):
    example = {"chosen_input_ids": [1, 2], "chosen_labels": [-100, 2], "rejected_input_ids": [1, 3], "length": 2}
    digest = examples_digest([example])
    assert examples_digest([{**example, "length": 5, "lang": "en"}]) == digest  # only token ids and labels count
    assert examples_digest([{**example, "chosen_labels": [2, 2]}]) != digest
    assert examples_digest([example, example]) != digest
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    before = model_fingerprint(str(tmp_path))
    assert before["path"] == str(tmp_path) and before["files"][0][:2] == ("model.safetensors", 5)
    (tmp_path / "model.safetensors").write_bytes(b"123456")
    assert model_fingerprint(str(tmp_path)) != before
    assert model_fingerprint("no/such-model") == {"name": "no/such-model"}


def test_the_key_changes_with_the_weights_the_loading_settings_the_precision_and_the_module(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    model = ModelSettings(str(tmp_path))
    pair = {"chosen_input_ids": [1, 2], "chosen_labels": [-100, 2], "rejected_input_ids": [1, 3]}
    module = {"scored_by": "lit_align.modules.preference.PreferenceModule", "vocab_size": 10}

    def key(model=model, precision="32-true", settings=module, split="train", examples=(pair,)):
        return cache_key(model, precision, settings, split, list(examples))

    first = key()
    assert key() == first  # a restart on the same weights, settings and data finds the same file
    others = [
        key(model=ModelSettings(str(tmp_path), dtype="bfloat16")),
        key(model=ModelSettings(str(tmp_path), attn_implementation="eager")),
        key(precision="bf16-mixed"),
        key(settings={**module, "vocab_size": 11}),
        key(settings={**module, "scored_by": "my.Module"}),
        key(split="val"),
        key(examples=(pair, pair)),
    ]
    assert len({first, *others}) == 1 + len(others)
    (tmp_path / "model.safetensors").write_bytes(b"123456")
    assert key() != first
