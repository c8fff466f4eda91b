"""Reading, cleaning, tokenising and batching alignment data; knows the tokenizer, never the model."""

from lit_align.data.datamodule import AlignDataModule, DataSource

__all__ = ["AlignDataModule", "DataSource"]
