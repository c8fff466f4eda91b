"""Four optimizer steps with validation every two, on the CPU, logging to TensorBoard: the run the callback tests
watch (with and without the callback under test, to compare)."""

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger


def fit_four_steps(module, data, save_dir, callbacks, limit_val_batches: int = 2) -> Trainer:
    trainer = Trainer(
        max_steps=4,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        limit_val_batches=limit_val_batches,
        logger=TensorBoardLogger(save_dir),
        use_distributed_sampler=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
    )
    trainer.fit(module, data)
    return trainer
