"""What a run prints: the progress bar and lit_align's own lines, not notices a user cannot act on.

Each silenced notice is named here with the reason it says nothing actionable to a lit_align user; anything
else a library prints still shows. Filters match one message each, so a new warning is never hidden by them.

- Lightning's "Tip: ... try installing litlogger" advertisement, printed by every run.
- torch's FutureWarning about ``LeafSpec``, raised by Lightning's own ``_pytree`` helper (a Lightning 2.6 call into
  torch >= 2.10; nothing in the user's recipe or in lit_align calls it).
- transformers' "Loading weights" and "Writing model shards" bars: per-tensor bars that flash by; the run says
  what it loaded (``LoRA: ... trainable``) and where it exported (``Hugging Face export written to ...``). Hub
  downloads keep their progress bars.
- The progress bar: without ``v_num`` (the run's folder is already named ``version_N``) and, when ``max_steps``
  ends the run, without Lightning's ``Epoch 0/-2`` (it prints ``max_epochs - 1``, and max_epochs is -1 then).

bitsandbytes' CPU-kernel notice and PEFT's ``is_gradient_checkpointing`` FutureWarning are handled where PEFT is
imported and called (`lit_align.models.loading.add_lora`), since they depend on whether a 4-bit model is in use.
"""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

_TRANSFORMERS_BARS = ("Loading weights", "Writing model shards")


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip: For seamless cloud logging")


def quiet_library_notices() -> None:
    """Install the filters above for this process (idempotent)."""
    import lightning_utilities.core.rank_zero as rank_zero

    if not any(isinstance(f, _DropLitLoggerTip) for f in rank_zero.log.filters):
        rank_zero.log.addFilter(_DropLitLoggerTip())
    leaf_spec = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
    warnings.filterwarnings("ignore", message=leaf_spec, category=FutureWarning)
    from transformers.utils import logging as transformers_logging

    if hasattr(transformers_logging, "set_tqdm_hook"):
        transformers_logging.set_tqdm_hook(_without_weight_bars)


def _without_weight_bars(factory, args: tuple, kwargs: dict):
    if kwargs.get("desc") in _TRANSFORMERS_BARS:
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


def _metrics_without_version(metrics: dict) -> dict:
    metrics.pop("v_num", None)
    return metrics


class AlignRichProgressBar(RichProgressBar):
    """Lightning's rich bar, without ``v_num`` and without a negative epoch count in step-limited runs."""

    def get_metrics(self, trainer, pl_module) -> dict:
        return _metrics_without_version(super().get_metrics(trainer, pl_module))

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"  # the run ends at max_steps, not at an epoch count
        return f"{description:{len(self.validation_description)}}"


class AlignTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar (when ``rich`` is not installed), without ``v_num``."""

    def get_metrics(self, trainer, pl_module) -> dict:
        return _metrics_without_version(super().get_metrics(trainer, pl_module))


def default_progress_bar() -> ProgressBar:
    """The bar Lightning would pick (rich when installed, else tqdm), in its lit_align form."""
    return AlignRichProgressBar() if _RICH_AVAILABLE else AlignTQDMProgressBar()
