"""Lightning accepts the training loader as resumable mid-epoch: no false "your dataloader is not resumable"
warning, since AlignDataModule.state_dict restores the sampler's position."""

import warnings

from lightning.fabric.utilities.types import _Stateful
from lightning.pytorch import Trainer

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.modules import SFTModule

from ..conftest import DEMO_DATA, TINY_MODEL


def _data() -> AlignDataModule:
    return AlignDataModule(
        [DataSource(str(DEMO_DATA / "sft_val.jsonl"))], tokenizer=str(TINY_MODEL), max_length=256, batch_size=2
    )


def _trainer(tmp_path, max_steps: int) -> Trainer:
    return Trainer(
        max_steps=max_steps,
        limit_val_batches=0,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_the_training_loader_follows_lightnings_stateful_protocol():
    data = _data()
    data.setup()
    assert isinstance(data.train_dataloader(), _Stateful)


def test_resuming_mid_epoch_gives_no_not_resumable_warning(tmp_path):
    first = _trainer(tmp_path, max_steps=2)
    first.fit(SFTModule(str(TINY_MODEL)), datamodule=_data())
    first.save_checkpoint(tmp_path / "mid_epoch.ckpt")  # 2 of the epoch's 100 batches

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, max_steps=3).fit(
            SFTModule(str(TINY_MODEL)), datamodule=_data(), ckpt_path=tmp_path / "mid_epoch.ckpt"
        )
    assert not [w for w in caught if "not resumable" in str(w.message)]
