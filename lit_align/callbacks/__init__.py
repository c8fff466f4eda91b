"""Callbacks that watch a run: they read the trainer and the module, never compute a loss. Add them to a recipe
with ``trainer.callbacks`` or a fragment under ``callbacks/``."""

from lit_align.callbacks.generation import GenerationLogger
from lit_align.callbacks.throughput import TokenThroughput

__all__ = ["GenerationLogger", "TokenThroughput"]
