import pytest

from lit_align.data.datamodule import AlignDataModule, DataSource

from ..conftest import DEMO_DATA, TINY_MODEL


@pytest.fixture(scope="module")
def preference_batch():
    """The first 4 demo validation pairs, tokenised and collated as a preference training batch."""
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))], tokenizer=str(TINY_MODEL), task="preference", batch_size=4
    )
    data.setup()
    return next(iter(data.train_dataloader()))
