"""The training loader, resumable mid-epoch in Lightning's eyes (its position lives in the batch sampler)."""

from __future__ import annotations

from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """The training loader, marked as resumable mid-epoch for Lightning.

    Lightning warns that a run resumed mid-epoch "is not resumable" unless every training loader has
    ``state_dict``/``load_state_dict`` (its ``_Stateful`` protocol), and then saves and reloads what they return.
    This loader's position is its batch sampler's, which ``AlignDataModule.state_dict`` already saves with the
    trainer's count of batches actually processed (a loader with workers is ahead of training, and cannot know
    that count), and restores before the first batch. So the loader's own state is empty: one copy of the
    position per checkpoint, and checkpoints written before this class resume alike."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to do: ``AlignDataModule.load_state_dict`` has positioned the sampler."""
