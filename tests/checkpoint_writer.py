"""A training job that saves a 32 MB checkpoint every step until it is killed, for the SIGKILL tests.

    python -m tests.checkpoint_writer <checkpoint dir> <max steps> file|sharded

``file``: one file per checkpoint through ``AtomicCheckpointIO``; ``sharded``: FSDP2 checkpoint directories
through ``lit_align.strategies.ModelParallelStrategy`` (one CPU process). The ballast buffer holds, in every
element, the global step its checkpoint is saved at, so a checkpoint mixing two saves shows.
"""

import sys

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

BALLAST_ELEMENTS = 8 * 1024 * 1024


class Ballast(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.register_buffer("ballast", torch.zeros(BALLAST_ELEMENTS))

    def configure_model(self):
        if self.device_mesh is not None:  # ModelParallelStrategy wants a sharded module to load
            from torch.distributed.fsdp import fully_shard

            fully_shard(self.layer, mesh=self.device_mesh)

    def training_step(self, batch, batch_idx):
        self.ballast.fill_(self.global_step + 1)  # the step of the checkpoint saved after this batch
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(10_000, 4), batch_size=1)


def main(directory: str, max_steps: int, layout: str) -> None:
    from lit_align.checkpoint_io import AtomicCheckpointIO
    from lit_align.strategies import ModelParallelStrategy

    if layout == "sharded":
        setup = {"accelerator": "cpu", "devices": 1, "strategy": ModelParallelStrategy()}
    else:
        setup = {"plugins": [AtomicCheckpointIO()]}
    checkpoints = ModelCheckpoint(
        dirpath=directory, save_last=True, every_n_train_steps=1, save_top_k=2, monitor="step", mode="max"
    )
    trainer = Trainer(
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints],
        **setup,
    )
    trainer.fit(Ballast())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
