"""The shape every preference loss has: an ``nn.Module`` from one `PreferenceLogps` to a loss and its metrics.

A loss's hyper-parameters are its constructor arguments, so a recipe names it as a YAML sub-object
(``model.init_args.loss: {class_path: ..., init_args: {...}}``) and a misspelled argument is a parse error.
It says what it needs from the module through three flags, so the module runs no forward it does not need.
State kept across steps (β-DPO's running margin statistics) lives in buffers: checkpoints carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from lit_align.losses.logps import PreferenceLogps

Gather = Callable[[torch.Tensor], torch.Tensor]
"""Concatenates a 1-D tensor over every rank (the module sets it under DDP; ``None`` on one process)."""


class LossOutput(NamedTuple):
    loss: torch.Tensor  # scalar, what the optimizer minimises
    metrics: dict[str, torch.Tensor]  # scalars under TRL's names, logged under train/ and val/


class PreferenceLoss(nn.Module):
    """Base of the pairwise preference losses.

    A subclass sets its needs and implements ``forward``:

    - ``reference_free``: the loss ignores the reference log-probs; the module then runs no reference at all.
    - ``sequence_nll``: the loss reads ``chosen_sequence_nll`` (mean NLL over prompt and answer), which costs
      the module one more pass over the chosen logits.
    - ``plain_logps``: the loss reads ``plain_policy_*``, the policy on the unguided input (preference-guided
      DPO's module computes them).

    ``averaged_logps`` says, for readers and the README, whether the loss works on per-token averages; the
    loss itself calls ``logps.averaged()`` when it does.
    """

    reference_free: bool = False
    sequence_nll: bool = False
    plain_logps: bool = False
    averaged_logps: bool = False
    gather: Gather | None = None

    def forward(self, logps: PreferenceLogps) -> LossOutput:
        raise NotImplementedError
