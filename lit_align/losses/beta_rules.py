"""How β is chosen for a batch of preference pairs, as a replaceable piece of ``BetaDPOLoss``.

A rule sees the batch's implicit-reward margins (``beta_dpo_margins``) and the loss's base β (β0), and decides
the β of the sigmoid DPO loss and which pairs train: one β for the batch (``FixedBeta``, ``BatchAdaptiveBeta``,
``LearnableBeta``) or one per pair (``MarginBeta``); ``lit_align.losses.beta_fusion.FusionBeta`` combines
several. Rules are ``nn.Module``s so that whatever they carry across steps (running statistics, a learnable
scale) sits in buffers or parameters: checkpoints hold it, a resumed run continues it, and the optimizer sees it.
A rule never imports ``torch.distributed``; the loss hands it ``gather``, a function that concatenates a tensor
over every rank (``None`` on one process).

β0 is the loss's ``beta`` and nothing else's: a rule receives it on every call, so a recipe states it once.
A new rule is a subclass of ``BetaRule`` with plain constructor arguments, named in YAML::

    model:
      class_path: lit_align.modules.PreferenceModule
      init_args:
        loss:
          class_path: lit_align.losses.BetaDPOLoss
          init_args:
            beta: 0.1
            rule: {class_path: my_package.rules.MyRule, init_args: {...}}
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from lit_align.losses.base import Gather
from lit_align.losses.beta_margins import batch_beta, filter_pairs, margin_pair_beta, update_margin_stats


class BetaDecision(NamedTuple):
    beta: torch.Tensor  # scalar, or [B] for a per-pair β; detached unless the rule learns β
    keep: torch.Tensor  # [B] bool, the local pairs whose loss is averaged


class BetaRule(nn.Module):
    """Base of the β rules: ``forward(margins, beta, gather)`` with ``margins`` ``[B]`` detached and ``beta``
    the loss's β0."""

    def forward(self, margins: torch.Tensor, beta: float, gather: Gather | None = None) -> BetaDecision:
        raise NotImplementedError

    def metrics(self) -> dict[str, torch.Tensor]:
        """Scalars describing the last decision, logged under ``train/`` or ``val/``."""
        return {}

    def _keep_all(self, margins: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(margins, dtype=torch.bool)


class FixedBeta(BetaRule):
    """β0 and every pair: with it ``BetaDPOLoss`` is DPO (the control run)."""

    def forward(self, margins: torch.Tensor, beta: float, gather: Gather | None = None) -> BetaDecision:
        self._beta = torch.tensor(beta, dtype=margins.dtype, device=margins.device)
        return BetaDecision(self._beta, self._keep_all(margins))

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"beta/used": self._beta} if hasattr(self, "_beta") else {}


class BatchAdaptiveBeta(BetaRule):
    """β-DPO's rule (Wu et al. 2024): a β per batch from how its margins compare with their running mean,
    and margin-guided filtering of outlying pairs.

    In training mode, for each batch (each micro-batch under gradient accumulation, as the authors):

    1. gather the margins over all ranks and update the running ``margin_mean`` and ``margin_std``
       (``update_margin_stats``) *before* the loss, as the authors do;
    2. keep ``floor(B·keep_fraction)`` of this rank's pairs, drawn with Gaussian weights around the running
       mean (``filter_pairs``);
    3. gather which pairs were kept and set ``β = β0·(1 + α·(mean(M_kept) - M0))`` (``batch_beta``).

    Across ranks this differs from the authors' code in one respect: they draw from the gathered batch on
    every rank with each rank's own random state, so ranks can disagree on the kept set and on β; here each
    rank draws among its own pairs and β comes from the kept margins of all ranks, so every rank uses the
    same β. On one process the two are the same.

    In eval mode (validation) the statistics are not updated, every pair counts and β is β0: the
    validation loss is then the plain DPO loss and compares with a DPO run. (The authors' evaluation updates
    the statistics and filters too.)

    Args:
        alpha: Scaling factor α of the margin shift (the authors' ``a``; their example uses 0.6, 0 gives a
            constant β).
        keep_fraction: Share of pairs that train, ``1 - ρ`` (the authors' ``mode_weight`` is ρ = 0.2). 1
            turns filtering off.
        momentum: γ of the running statistics (0.9 in the authors' code).
    """

    def __init__(self, alpha: float = 0.6, keep_fraction: float = 0.8, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 < keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.alpha = alpha
        self.keep_fraction = keep_fraction
        self.momentum = momentum
        self.register_buffer("margin_mean", torch.zeros(()))
        self.register_buffer("margin_std", torch.zeros(()))
        self._last: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def forward(self, margins: torch.Tensor, beta: float, gather: Gather | None = None) -> BetaDecision:
        margins = margins.detach().reshape(-1)
        if not self.training:
            return self._decide(torch.tensor(beta, device=margins.device), self._keep_all(margins))
        everyone = gather(margins).reshape(-1) if gather is not None else margins
        mean, std = update_margin_stats(self.margin_mean, self.margin_std, everyone, self.momentum)
        self.margin_mean.copy_(mean)
        self.margin_std.copy_(std)
        keep = filter_pairs(margins, mean, std, self.keep_fraction)
        everyone_kept = gather(keep.float()).reshape(-1) > 0.5 if gather is not None else keep
        return self._decide(batch_beta(beta, self.alpha, everyone[everyone_kept], mean), keep, everyone_kept)

    def _decide(self, beta: torch.Tensor, keep: torch.Tensor, everyone_kept: torch.Tensor | None = None):
        everyone_kept = keep if everyone_kept is None else everyone_kept
        self._last = {"beta/used": beta, "filter/kept_fraction": everyone_kept.float().mean()}
        return BetaDecision(beta, keep)

    def metrics(self) -> dict[str, torch.Tensor]:
        return {
            **({"beta/used": self._last["beta/used"]} if self._last else {}),
            "margin/ema_mean": self.margin_mean.clone(),
            "margin/ema_std": self.margin_std.clone(),
            "filter/kept_fraction": self._last.get("filter/kept_fraction", torch.tensor(1.0)),
        }


class LearnableBeta(BetaRule):
    """β learned by the optimizer with the policy, as a scale of β0 in log space (``β = β0·exp(log_scale)``,
    starting at β0 and staying positive); every pair trains. An experiment, not a recommendation.

    For one pair with margin ``h`` the sigmoid loss ``-log σ(β·h)`` has ``∂L/∂β = -h·σ(-β·h)`` and
    ``∂L/∂log_scale = -β·h·σ(-β·h)``. Gradient descent therefore raises β whenever the batch's margins are
    positive on balance, which is what DPO training makes them, and the loss keeps falling as β grows
    (``-log σ(β·h) → 0`` for ``h > 0``): nothing inside the loss bounds β. It starts at zero gradient (policy
    = reference, ``h = 0``) and shrinks β on batches whose margins are negative. A larger β also scales the
    policy's own gradient, so a run with this rule drifts from the reference faster as it goes. Restrain it
    (a prior on ``log_scale``, a clamp, a separate learning rate) in a subclass if that is not the point.

    ``log_scale`` is a 0-dim parameter, so ``parameter_groups`` gives it no weight decay; it shares the
    policy's learning rate. The logged rewards keep using β0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))
        self._beta: torch.Tensor | None = None

    def forward(self, margins: torch.Tensor, beta: float, gather: Gather | None = None) -> BetaDecision:
        self._beta = beta * self.log_scale.exp()
        return BetaDecision(self._beta, self._keep_all(margins))

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"beta/used": self._beta.detach()} if self._beta is not None else {}


class MarginBeta(BetaRule):
    """A β per pair from how its margin compares with the running margin distribution; every pair trains.

    β-DPO argues at the level of the batch that a batch more separable than usual (larger implicit-reward
    margins) is informative and can take a larger β, a batch below the usual a smaller one. This rule makes
    the same argument per pair: ``β_i = β0·(1 + α·tanh((M_i - M0)/σ))`` (``margin_pair_beta``), with ``M0`` and
    ``σ`` the running margin mean and std. A pair one σ above the running mean gets ``β0·(1 + 0.76α)``, one σ
    below ``β0·(1 - 0.76α)``; the ``tanh`` bounds β in ``(β0(1 - α), β0(1 + α))``. Unlike ``BatchAdaptiveBeta``
    it normalises by σ, so α does not depend on the scale of the margins.

    In training mode the statistics are updated *before* deciding, from the margins of every rank, with
    ``update_margin_stats`` exactly as ``BatchAdaptiveBeta`` does (so every rank uses the same ``M0`` and σ).
    Those averages start at 0 without bias correction, so for the first few dozen steps σ is a fraction of the
    batch's real spread and most pairs sit near the bounds: β starts as a two-level rule and softens as σ
    catches up.

    Worked example from zero statistics, ``β0 = 0.1, α = 0.5``, ``M = [3, 2, 0, -1]`` (mean 1, std 1.825742):
    the update gives ``M0 = 0.1`` and ``σ = 0.182574``, so ``z = [15.88, 10.41, -0.548, -6.02]`` and
    ``β ≈ [0.15, 0.15, 0.075059, 0.050001]``.

    In eval mode (validation) the statistics are not updated and every pair gets β0, so the validation loss is
    DPO's, as with ``BatchAdaptiveBeta``.

    Args:
        alpha: Largest relative change of β, in [0, 1) so that β stays positive; 0 gives β0 for every pair.
        momentum: γ of the running margin mean and std (0.9 as in β-DPO).
    """

    def __init__(self, alpha: float = 0.5, momentum: float = 0.9) -> None:
        super().__init__()
        if not (math.isfinite(alpha) and 0.0 <= alpha < 1.0):
            raise ValueError(f"alpha must be in [0, 1) so that beta stays positive, got {alpha}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.alpha = alpha
        self.momentum = momentum
        self.register_buffer("margin_mean", torch.zeros(()))
        self.register_buffer("margin_std", torch.zeros(()))
        self._beta: torch.Tensor | None = None

    @torch.no_grad()
    def forward(self, margins: torch.Tensor, beta: float, gather: Gather | None = None) -> BetaDecision:
        margins = margins.detach().reshape(-1)
        if not self.training:
            self._beta = torch.full(margins.shape, float(beta), dtype=torch.float32, device=margins.device)
            return BetaDecision(self._beta, self._keep_all(margins))
        everyone = gather(margins).reshape(-1) if gather is not None else margins
        mean, std = update_margin_stats(self.margin_mean, self.margin_std, everyone, self.momentum)
        self.margin_mean.copy_(mean)
        self.margin_std.copy_(std)
        self._beta = margin_pair_beta(margins, beta, self.alpha, mean, std)
        return BetaDecision(self._beta, self._keep_all(margins))

    def metrics(self) -> dict[str, torch.Tensor]:
        """``beta/used`` is the mean β over this rank's pairs, ``beta/used_std`` their spread (population std,
        so one pair gives 0)."""
        used = {}
        if self._beta is not None:
            used = {"beta/used": self._beta.mean(), "beta/used_std": self._beta.std(correction=0)}
        return {**used, "margin/ema_mean": self.margin_mean.clone(), "margin/ema_std": self.margin_std.clone()}
