"""Benchmark scores for a model or a run, through EleutherAI's lm-evaluation-harness.

``lit_align eval`` (`lit_align.evaluation.command`) and the `lit_align.callbacks.LMEval` callback share one path:
`run_harness` hands lm-eval the model already in memory (a LoRA adapter unmerged, the policy being trained), with
the tasks of ``configs/eval/tasks/`` beside lm-eval's own; `result_rows` flattens what it returns into one row per
task, metric and filter. lm-eval is the ``eval`` extra, imported only when an evaluation runs.
"""

from lit_align.evaluation.harness import HarnessSettings, run_harness
from lit_align.evaluation.results import result_rows, scalar_metrics

__all__ = ["HarnessSettings", "result_rows", "run_harness", "scalar_metrics"]
