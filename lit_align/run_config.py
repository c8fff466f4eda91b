"""The run's resolved ``config.yaml``, saved in the run's folder without ever replacing a file the run did not write.

Lightning's ``SaveConfigCallback`` writes ``<trainer.log_dir>/config.yaml``; lit_align used to pass it
``overwrite=True``. With a logger the folder is a fresh ``version_N``, but with ``--trainer.logger false``
``log_dir`` is ``trainer.default_root_dir``, the working directory by default, and a user's own recipe called
``config.yaml`` there was silently replaced. Now:

- the file does not exist: it is written, as before;
- it exists and the run resumes (``--ckpt_path``), so the folder is the interrupted run's own: the resumed
  configuration goes beside it as ``config.resume-1.yaml`` (then ``-2``, ...), the original stays as it was;
- it exists and the run is a new one: the run stops before training, naming the file and what to set.

Beside it goes ``run.json`` (`lit_align.run_record`: what code, data, libraries and hardware made the run, and
whether it finished), written by this callback when the configuration is saved and rewritten when the run ends.
A new run also refuses a folder that holds another run's ``run.json`` without a ``config.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lit_align.checks import ConfigError
from lit_align.run_record import (
    RECORD_NAME,
    config_sha256,
    error_text,
    finish_record,
    now_iso,
    read_record,
    start_record,
    with_previous_attempts,
    write_record,
)

CONFIG_NAME = "config.yaml"
TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def config_target(directory: Path, resuming: bool) -> Path:
    """Where this run's configuration goes in ``directory`` (see the module docstring); never an existing file."""
    target = directory / CONFIG_NAME
    if resuming:
        n = 1
        while target.exists():
            target = directory / f"config.resume-{n}.yaml"
            n += 1
        return target
    # A run.json alone is another run's record too (its config.yaml deleted or never written): not ours to replace.
    for existing in (target, directory / RECORD_NAME):
        if existing.exists():
            raise ConfigError(
                f"{existing} exists and this run did not write it; lit_align never replaces a file it did not "
                f"create. The run would write its config, run.json, checkpoints/ and hf/ into {directory} "
                "(trainer.default_root_dir, used when trainer.logger is false). Set --trainer.default_root_dir to a "
                "new folder (e.g. logs/my-run), or keep a logger so that every run gets its own "
                "logs/<name>/version_N/."
            )
    return target


def subcommand_of(parser) -> str | None:
    """The CLI subcommand whose parser this is (jsonargparse names it last in the parser's ``prog``:
    ``lit_align [options] fit``), or None when the parser is not a Trainer subcommand's."""
    words = str(getattr(parser, "prog", "") or "").split()
    return words[-1] if words and words[-1] in TRAINER_SUBCOMMANDS else None


class SaveRunConfig(SaveConfigCallback):
    """``SaveConfigCallback`` with `config_target`'s choice of file, and the run's ``run.json``; rank zero decides
    and writes, every rank learns the decision (a refusal stops all of them).

    The record ends ``finished`` at the teardown of the subcommand's own stage: inside ``fit``, the validation
    that ``validate_before_training`` runs first tears down too, and the run is not over then."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._started = now_iso()  # the trainer is built after the model: loading the weights is not counted
        self._subcommand = subcommand_of(self.parser)
        self._record_path: Path | None = None  # set on rank zero once the record is written
        self._record: dict | None = None

    @override
    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = Path(trainer.log_dir)  # a broadcast under DDP: every rank asks
        resuming = bool(self.config.get("ckpt_path"))
        decision: str | Path = ""
        if trainer.is_global_zero:
            try:
                decision = config_target(log_dir, resuming)
            except ConfigError as error:
                decision = str(error)
        decision = trainer.strategy.broadcast(decision)
        if isinstance(decision, str):
            raise ConfigError(decision)
        if trainer.is_global_zero:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, decision, skip_none=False, overwrite=False, multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
            self._start_record(trainer, log_dir / RECORD_NAME, Path(decision), resuming)
        self.already_saved = trainer.strategy.broadcast(True)

    def _start_record(self, trainer, path: Path, config_path: Path, resuming: bool) -> None:
        seed = self.config.get("seed_everything")
        record = start_record(
            command=sys.argv,
            subcommand=self._subcommand,
            config_sha256=config_sha256(config_path.read_text()),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            trainer=trainer,
            datamodule=trainer.datamodule,
            started=self._started,
        )
        # config_target refused a new run into a folder with a run.json: one found here is this run's own past.
        self._record = with_previous_attempts(record, read_record(path) if resuming else None)
        self._record_path = path
        write_record(path, self._record)

    def _end(self, trainer, status: str, error: str | None = None) -> None:
        if self._record is None or self._record_path is None:  # not rank zero, or stopped before the record
            return
        self._record = finish_record(self._record, status, error=error, global_step=trainer.global_step)
        write_record(self._record_path, self._record)

    @override
    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == (self._subcommand or stage):
            self._end(trainer, "finished")

    @override
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # Lightning turns SIGTERM into SIGTERMException at the next step; Ctrl+C arrives as KeyboardInterrupt.
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self._end(trainer, "interrupted")
        else:
            self._end(trainer, "failed", error=error_text(exception))
