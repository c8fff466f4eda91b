"""The shipped early-stopping fragment stops at the validation run its patience predicts."""

import pytest
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from ..conftest import ROOT

# val/loss per validation run: best 0.7 at run 2, then 3 runs without improvement -> stop after run 5.
SCRIPTED_VAL_LOSS = [1.0, 0.8, 0.7, 0.75, 0.71, 0.72, 0.5, 0.4]


class ScriptedModule(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.validations = 0

    def training_step(self, batch, batch_idx):
        return (self.weight * batch).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", SCRIPTED_VAL_LOSS[self.validations])
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fragment_callback() -> EarlyStopping:
    fragment = yaml.safe_load((ROOT / "callbacks" / "early_stopping.yaml").read_text(encoding="utf-8"))
    (spec,) = fragment["trainer"]["callbacks+"]
    assert spec["class_path"] == "lightning.pytorch.callbacks.EarlyStopping"
    return EarlyStopping(**spec["init_args"])


@pytest.mark.parametrize("patience", [None, 1])
def test_stops_after_patience_runs_without_improvement(patience):
    stopper = _fragment_callback()
    if patience is not None:
        stopper.patience = patience
    data = DataLoader(torch.ones(4, 1), batch_size=2)
    module = ScriptedModule()
    trainer = Trainer(
        max_epochs=len(SCRIPTED_VAL_LOSS),
        callbacks=[stopper],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    # patience 3 (the fragment): best at run 2 (0.7); runs 3, 4, 5 do not beat it -> stop after run 5.
    # patience 1: run 3 (0.75) does not beat 0.7 -> stop after run 3.
    expected_runs = 6 if patience is None else 4
    assert module.validations == expected_runs
    assert trainer.current_epoch == expected_runs
