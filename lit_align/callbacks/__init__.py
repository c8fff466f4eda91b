"""Callbacks that watch a run: they read the trainer and the module, never compute a loss. Add them to a recipe
with ``trainer.callbacks`` or a fragment under ``callbacks/``. The CLI adds two itself: `AlignModelCheckpoint`
(its ``checkpoint:`` section) and `LatestRunLink` (``logs/<experiment>/latest``)."""

from lit_align.callbacks.checkpoint import AlignModelCheckpoint
from lit_align.callbacks.generation import GenerationLogger
from lit_align.callbacks.lm_eval import LMEval
from lit_align.callbacks.run_folder import LatestRunLink
from lit_align.callbacks.throughput import TokenThroughput

__all__ = ["AlignModelCheckpoint", "GenerationLogger", "LatestRunLink", "LMEval", "TokenThroughput"]
