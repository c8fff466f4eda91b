"""The run's resolved ``config.yaml``, saved in the run's folder without ever replacing a file the run did not write.

Lightning's ``SaveConfigCallback`` writes ``<trainer.log_dir>/config.yaml``; lit_align used to pass it
``overwrite=True``. With a logger the folder is a fresh ``version_N``, but with ``--trainer.logger false``
``log_dir`` is ``trainer.default_root_dir``, the working directory by default, and a user's own recipe called
``config.yaml`` there was silently replaced. Now:

- the file does not exist: it is written, as before;
- it exists and the run resumes (``--ckpt_path``), so the folder is the interrupted run's own: the resumed
  configuration goes beside it as ``config.resume-1.yaml`` (then ``-2``, ...), the original stays as it was;
- it exists and the run is a new one: the run stops before training, naming the file and what to set.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback

from lit_align.checks import ConfigError

CONFIG_NAME = "config.yaml"


def config_target(directory: Path, resuming: bool) -> Path:
    """Where this run's configuration goes in ``directory`` (see the module docstring); never an existing file."""
    target = directory / CONFIG_NAME
    if not target.exists():
        return target
    if resuming:
        n = 1
        while (directory / f"config.resume-{n}.yaml").exists():
            n += 1
        return directory / f"config.resume-{n}.yaml"
    raise ConfigError(
        f"{target} exists and this run did not write it; lit_align never replaces a file it did not create. "
        f"The run would write its config, checkpoints/ and hf/ into {directory} (trainer.default_root_dir, used "
        "when trainer.logger is false). Set --trainer.default_root_dir to a new folder (e.g. logs/my-run), or keep "
        "a logger so that every run gets its own logs/<name>/version_N/."
    )


class SaveRunConfig(SaveConfigCallback):
    """``SaveConfigCallback`` with `config_target`'s choice of file; rank zero decides and writes, every rank
    learns the decision (a refusal stops all of them)."""

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
        self.already_saved = trainer.strategy.broadcast(True)
