"""``RepeatedBatches``: serve every training batch several times in a row, one optimizer step's batches at a time.

GRPO samples completions for a batch of prompts once, then may take several optimizer steps on them
(``num_iterations``, the clipped ratio keeping later steps honest). The cheapest way to give the module the same
batch again is to have the loader serve it again: the module then sees the same prompts, can reuse their rollouts,
and Lightning's step and epoch counts stay right without a custom loop. With gradient accumulation of ``A``
batches per step, the batches of one step are repeated as a block: ``b1 b2 b1 b2 b3 b4 b3 b4`` for ``A = 2`` and
two repeats, so every optimizer step sees the same ``A`` batches as the step before it.

Only index arithmetic over the inner batch sampler, so it is tested without data. Its position is counted in
served (outer) batches, the count Lightning's loop keeps and the data module saves; resuming maps that count back
to the inner sampler's position at the start of the block and skips what the block already served.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice

from torch.utils.data import Sampler


def resume_point(position: int, num_batches: int, repeats: int, block: int) -> tuple[int, int]:
    """``(inner start, skip)`` for resuming after ``position`` served batches: the inner batch that begins the
    current block, and how many served batches of that block to skip.

    Full blocks serve ``block * repeats`` batches each; the last block holds ``num_batches mod block`` batches
    when that is not 0. E.g. 4 inner batches, block 2, repeats 2: position 5 (``b1 b2 b1 b2 b3`` served) is block
    2, which starts at inner batch 2, with 1 served batch to skip; the next batch served is ``b4``."""
    if position >= num_batches * repeats:
        return num_batches, 0
    per_block = block * repeats
    full_blocks = num_batches // block
    if position < full_blocks * per_block:
        k = position // per_block
        return k * block, position - k * per_block
    return full_blocks * block, position - full_blocks * per_block


def check_layout(state: Mapping, repeats: int, block: int) -> None:
    """Refuse to resume a position counted under another layout: the count would point at another batch. A state
    saved without repetition (no ``batch_repeats`` key) counts as one repeat of blocks of one."""
    saved = (state.get("batch_repeats", 1), state.get("repeat_block", 1))
    if saved != (repeats, block if repeats > 1 else 1):
        raise ValueError(
            f"cannot resume mid-epoch: the checkpoint served each block of {saved[1]} batch(es) {saved[0]} time(s), "
            f"this run would serve blocks of {block} {repeats} time(s). Keep the module's num_iterations and the "
            "trainer's accumulate_grad_batches as they were until the epoch ends"
        )


class RepeatedBatches(Sampler[list[int]]):
    """Wrap a batch sampler: its batches come in blocks of ``block``, each block served ``repeats`` times.

    Args:
        batches: The inner batch sampler (``__len__``; ``set_epoch`` and ``state_dict``/``load_state_dict`` with a
            ``batches_yielded`` count are passed through when it has them).
        repeats: How many times each block is served (the module's ``num_iterations``).
        block: Batches per block: the trainer's ``accumulate_grad_batches``.
    """

    def __init__(self, batches: Sampler[list[int]], repeats: int, block: int = 1) -> None:
        super().__init__()
        if repeats < 1 or block < 1:
            raise ValueError(f"repeats and block must be >= 1, got repeats={repeats}, block={block}")
        self.batches = batches
        self.repeats = repeats
        # With one repeat the block size changes nothing; 1 keeps saved states comparable across accumulation.
        self.block = block if repeats > 1 else 1
        self.epoch: int | None = None
        self._yielded = 0
        self._resume_at, self._skip = 0, 0

    @property
    def sampler(self) -> RepeatedBatches:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler``; this one passes it on."""
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._yielded, self._resume_at, self._skip = 0, 0, 0
        self.epoch = epoch
        if callable(getattr(self.batches, "set_epoch", None)):
            self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches) * self.repeats

    def __iter__(self) -> Iterator[list[int]]:
        self._yielded, skip = self._resume_at, self._skip
        self._resume_at, self._skip = 0, 0
        inner = iter(self.batches)
        while chunk := list(islice(inner, self.block)):
            for _ in range(self.repeats):
                for batch in chunk:
                    if skip:
                        skip -= 1
                        continue
                    self._yielded += 1
                    yield list(batch)

    def state_dict(self) -> dict:
        """The inner sampler's state with ``batches_yielded`` counted in served batches, and the layout."""
        state = dict(self.batches.state_dict()) if hasattr(self.batches, "state_dict") else {}
        return {**state, "batches_yielded": self._yielded, "batch_repeats": self.repeats, "repeat_block": self.block}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue after ``state["batches_yielded"]`` served batches (the data module writes the loop's count)."""
        check_layout(state, self.repeats, self.block)
        position = state["batches_yielded"]
        start, self._skip = resume_point(position, len(self.batches), self.repeats, self.block)
        self._yielded = self._resume_at = position
        inner = {k: v for k, v in state.items() if k not in ("batch_repeats", "repeat_block")}
        self.batches.load_state_dict({**inner, "batches_yielded": start})
        self.epoch = state.get("epoch", self.epoch)
