"""lit_align: align language models (SFT, DPO and its family) with PyTorch Lightning."""

__version__ = "0.1.0"
