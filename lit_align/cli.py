"""The ``lit_align`` command: a LightningCLI where the YAML keys are constructor arguments.

``model.class_path`` picks the algorithm; the tokenizer path and the kind of records the module trains on
are linked from the model to the data module, so a recipe never states them twice. ``lit_align eval`` is not a
Trainer run: it goes to its own parser (`lit_align.evaluation.command`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI

from lit_align.callbacks.checkpoint import AlignModelCheckpoint
from lit_align.callbacks.run_folder import LatestRunLink, continue_run_folder
from lit_align.checks import ConfigError, check_run_length, config_error_in
from lit_align.cli_errors import AlignArgumentParser
from lit_align.console import default_progress_bar, quiet_library_notices
from lit_align.data.datamodule import AlignDataModule
from lit_align.data.errors import DataFormatError
from lit_align.legacy import upgrade_hparams
from lit_align.modules.base import AlignModule
from lit_align.rollouts.rewards import RewardError
from lit_align.run_config import SaveRunConfig
from lit_align.strategies import release_engine

RUN_STOPPERS = (DataFormatError, FloatingPointError, FileNotFoundError, ConnectionError, RewardError)
"""Errors that stop a run with a complete message (lit_align's own: a bad record, a non-finite run, a data path
that is missing or a hub that cannot be reached, a reward function that failed on a completion it names); `main`
prints them alone."""


class AlignCLI(LightningCLI):
    def __init__(self, *args, parser_class=AlignArgumentParser, **kwargs) -> None:
        # A parse error is printed first and alone, with a suggestion (lit_align/cli_errors.py).
        super().__init__(*args, parser_class=parser_class, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--validate_before_training",
            type=bool,
            default=False,
            help="Run the validation loop once before the first step, so curves start at step 0.",
        )
        # Checkpointing has its own `checkpoint:` section so that `trainer.callbacks` stays free for the
        # fragments under callbacks/. Lightning's ModelCheckpoint, except that last.ckpt is the latest state at
        # every save and at the end (with a monitor, Lightning's leaves it at the last improvement).
        parser.add_lightning_class_args(AlignModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.filename": "step{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
                # AlignDataModule's batch sampler shards batches across ranks itself.
                "trainer.use_distributed_sampler": False,
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "logs", "name": "lit_align"},
                },
                # A job killed while saving leaves the previous last.ckpt whole (see lit_align/checkpoint_io.py).
                # A recipe that sets its own trainer.plugins keeps this one by listing it too.
                "trainer.plugins": [{"class_path": "lit_align.checkpoint_io.AtomicCheckpointIO"}],
            }
        )
        parser.link_arguments("model", "data.tokenizer", compute_fn=lambda m: m.tokenizer_path, apply_on="instantiate")
        parser.link_arguments("model", "data.task", compute_fn=lambda m: m.data_task, apply_on="instantiate")
        parser.link_arguments(
            "model", "data.batch_repeats", compute_fn=lambda m: m.batch_repeats, apply_on="instantiate"
        )

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's own (``--ckpt_path``'s hyper-parameters parsed over the recipe's model), with checkpoints
        written before losses were objects upgraded first (`lit_align.legacy`)."""
        ckpt_path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        hparams = upgrade_hparams(hparams)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"The hyper-parameters stored in {ckpt_path} do not fit the recipe's model (above).\n")
            raise

    def instantiate_classes(self) -> None:
        """LightningCLI's, with a setting that cannot work (`ConfigError`, raised by the constructors) printed as one
        ``error:`` line and exit code 2, like a parse error, instead of a traceback through jsonargparse."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        try:
            if self.subcommand in (None, "fit"):
                check_run_length(config.trainer.get("max_steps"), config.trainer.get("max_epochs"))
            super().instantiate_classes()
        except ValueError as error:
            if (cause := config_error_in(error)) is None:
                raise
            sys.stderr.write(f"error: {cause}\n")
            sys.exit(2)

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path <experiment>/version_N/checkpoints/...`` logs into ``version_N`` again when the
        recipe's TensorBoard logger writes to ``<experiment>`` (see `lit_align.callbacks.run_folder`)."""
        config = self.config.get("fit") if self.subcommand == "fit" else None
        if config is not None and config.get("ckpt_path"):
            continue_run_folder(config.trainer.get("logger"), config.ckpt_path)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        # Only runs that train move `latest`: a `validate` folder holds no checkpoints/ or hf/ to point at.
        if trainer.logger is not None and self.subcommand in (None, "fit"):
            # First, so that the checkpoint callbacks stay last (Lightning orders them so when it builds the trainer).
            trainer.callbacks.insert(0, LatestRunLink())
        return trainer

    def _instantiate_trainer(self, config: dict, callbacks: list):
        if config.get("enable_checkpointing") is False:
            # The `checkpoint:` section always builds a ModelCheckpoint, which Lightning refuses beside
            # enable_checkpointing: false. Off means off: no checkpoint callback (the hf/ export is still written).
            callbacks = [callback for callback in callbacks if not isinstance(callback, ModelCheckpoint)]
        own = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in own):
            callbacks = [*callbacks, default_progress_bar()]  # no v_num, no "Epoch 0/-2" (lit_align/console.py)
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        # Not when resuming: the checkpoint's weights are only loaded inside `fit`.
        if self.config.fit.get("validate_before_training") and not self.config.fit.get("ckpt_path"):
            self.trainer.validate(self.model, datamodule=self.datamodule)
            release_engine(self.trainer.strategy)  # DeepSpeed: fit builds an engine of its own


def instantiate(args: list[str] | dict) -> AlignCLI:
    """Parse a recipe and build its model, data module and trainer without running anything (for scripts that
    read recipes: the same schema and links as `lit_align fit`)."""
    return AlignCLI(
        AlignModule,
        AlignDataModule,
        subclass_mode_model=True,
        run=False,
        save_config_callback=None,
        auto_configure_optimizers=False,
        args=args,
    )


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["eval"]:  # lm-eval scores: not a Trainer run, its own parser (lit_align/evaluation/command.py)
        from lit_align.evaluation.command import main as evaluate

        quiet_library_notices()
        return evaluate(argv[1:])
    # Like `python -m`, let `class_path` name a module in the working directory (your own algorithm's file).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # Tokenisation happens before DataLoader workers fork; without this, tokenizers warns in every worker.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_library_notices()
    try:
        AlignCLI(
            AlignModule,
            AlignDataModule,
            subclass_mode_model=True,
            save_config_callback=SaveRunConfig,  # never replaces a file the run did not write
            auto_configure_optimizers=False,
            args=args,
        )
    except ConfigError as error:  # found once the run has started (e.g. where it would write): one line, too
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
    except RUN_STOPPERS as error:
        # Our own stops (a bad record: file, line, field; a non-finite loss: step, batch, what to change) say all a
        # user needs; the traceback through Lightning and the data pipeline only buries the message.
        if os.environ.get("LIT_ALIGN_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {error}\n(LIT_ALIGN_TRACEBACK=1 shows where it was raised)\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
