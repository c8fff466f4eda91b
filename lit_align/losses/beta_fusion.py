"""Information fusion of β rules: several signals each propose a β, one operator combines them.

Each β rule (`lit_align.losses.beta_rules`) reads one piece of evidence about how hard to pull away from the
reference: a fixed prior (``FixedBeta``), how separable the batch is (``BatchAdaptiveBeta``), how separable
each pair is (``MarginBeta``). ``FusionBeta`` treats them as independent estimates of one quantity and combines
them with a fusion operator, so that a researcher can compare combinations from YAML without writing a rule:

- ``arithmetic``: ``Σ w_k β_k``, the weighted mean.
- ``geometric``: ``exp(Σ w_k log β_k)``, a mean in log space; β is a scale, and one signal halving β and
  another doubling it cancel out.
- ``precision``: inverse-variance weighting, ``w_k ∝ w_k⁰ / (var_k + min_variance)``, with ``var_k`` the running
  variance of signal k's β. For independent unbiased estimates this is the minimum-variance combination (the
  update step of a Kalman filter): a signal that moves little is trusted more. A *constant* signal (FixedBeta)
  has zero variance and therefore takes almost all the weight, so that the fusion returns that constant:
  precision fusion is meant for signals that all move.
- ``owa``: Yager's ordered weighted averaging, ``Σ_j w_j β_(j)`` over the signals sorted per pair from the
  largest β down. The weights belong to ranks, not to signals: ``[1, 0, ...]`` is the max, ``[..., 0, 1]`` the
  min, equal weights the mean, anything between an "optimism" knob.

The operators are pure functions of a ``[K, n]`` tensor of β values (K signals, n pairs, n = 1 when every
signal gives one β); the running statistics of ``precision`` live in buffers of ``FusionBeta``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from lit_align.losses.base import Gather
from lit_align.losses.beta_margins import MIN_BETA
from lit_align.losses.beta_rules import BetaDecision, BetaRule

FusionOperator = Literal["arithmetic", "geometric", "precision", "owa"]


def normalised_weights(weights: Sequence[float] | None, names: Sequence[str]) -> torch.Tensor:
    """The ``weights`` setting as a ``[K]`` tensor summing to 1; equal weights when ``None``.

    Raises a ValueError naming the setting when the count differs from the signals', a weight is negative or
    not finite, or all are zero. Example: ``[2, 1, 1]`` gives ``[0.5, 0.25, 0.25]``.
    """
    if weights is None:
        return torch.full((len(names),), 1.0 / len(names))
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(
            f"weights has {len(weights)} values but there are {len(names)} signals "
            f"({', '.join(names)}): give one weight per signal, in the same order, or leave weights unset"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights}")
    tensor = torch.tensor(weights)
    return tensor / tensor.sum()


def arithmetic_fusion(betas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k β_k`` over dim 0 of ``betas`` ``[K, n]``. Example: β = [0.1, 0.2, 0.4] with w = [0.5, 0.25, 0.25]
    gives 0.05 + 0.05 + 0.1 = 0.2."""
    return (weights.to(betas).unsqueeze(-1) * betas).sum(0)


def geometric_fusion(betas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``exp(Σ_k w_k log β_k)``, each β clamped at ``MIN_BETA`` first so that the log is finite. Example: β =
    [0.1, 0.2, 0.4], w = [0.5, 0.25, 0.25]: ``exp(0.5 ln 0.1 + 0.25 ln 0.2 + 0.25 ln 0.4) = 0.168179``."""
    return arithmetic_fusion(betas.clamp(min=MIN_BETA).log(), weights).exp()


def precision_weights(weights: torch.Tensor, variances: torch.Tensor, min_variance: float) -> torch.Tensor:
    """Inverse-variance weights ``w_k / (var_k + min_variance)``, normalised to sum 1.

    Example: w equal, variances [0, 1e-4] and min_variance 1e-8: raw 1e8 and 1/1.0001e-4 = 9999, so the
    constant signal weighs 1e8 / (1e8 + 9999) = 0.99990001.
    """
    raw = weights.to(variances) / (variances + min_variance)
    return raw / raw.sum()


def owa_fusion(betas: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Yager's ordered weighted average per pair: ``Σ_j w_j β_(j)`` with ``β_(1) ≥ β_(2) ≥ ...``.

    Returns the fused ``[n]`` and the weight each signal received for each pair, ``[K, n]`` (ties keep the
    signals' order). Example: β = [0.1, 0.2, 0.4], w = [0.5, 0.25, 0.25]: sorted [0.4, 0.2, 0.1], fused
    0.2 + 0.05 + 0.025 = 0.275; the signals received [0.25, 0.25, 0.5].
    """
    ordered, order = torch.sort(betas, dim=0, descending=True, stable=True)
    rank_weights = weights.to(betas).unsqueeze(-1).expand_as(betas)
    received = torch.zeros_like(betas).scatter(0, order, rank_weights)
    return (rank_weights * ordered).sum(0), received


def update_moments(
    mean: torch.Tensor, var: torch.Tensor, values: torch.Tensor, momentum: float, first: bool | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running mean and variance of each signal's β (``values`` ``[K, n]``, every rank's pairs); new tensors.

    The first update starts from the batch: ``mean = mean(v)``, ``var = mean((v - mean)²)``. Later ones are
    exponential averages with ``γ = momentum``: ``mean ← γ·mean + (1 - γ)·mean(v)``, then
    ``var ← γ·var + (1 - γ)·mean((v - mean)²)`` around the *updated* mean, so a signal whose level drifts from
    batch to batch counts as varying even when each batch is constant (a scalar signal's one value).
    Example, γ = 0.9: values [0.1, 0.3] first give mean 0.2, var 0.01; then [0.2, 0.2] give mean 0.2 and
    var 0.009; then [0.3] gives mean 0.21, var 0.9·0.009 + 0.1·0.0081 = 0.00891.

    ``first`` may be a 0-dim bool tensor (``num_updates == 0``): ``torch.where`` then needs no device sync.
    """
    values = values.detach().to(mean.dtype)
    first = torch.as_tensor(first, device=mean.device)
    batch_mean = values.mean(-1)
    new_mean = torch.where(first, batch_mean, momentum * mean + (1 - momentum) * batch_mean)
    spread = ((values - new_mean.unsqueeze(-1)) ** 2).mean(-1)
    return new_mean, torch.where(first, spread, momentum * var + (1 - momentum) * spread)


class FusionBeta(BetaRule):
    """β from several β rules ("signals") combined by one fusion operator; a pair trains when every signal keeps it.

    Each signal is called as a rule would be, ``signal(margins, β0, gather)``, and keeps its own state (its
    buffers sit in this module's ``signals`` and so in checkpoints). A signal's β is a scalar or one per pair;
    when any is per pair, the scalars are broadcast and the fused β is ``[B]``, otherwise it is a scalar. The
    fused β keeps the signals' gradients (a ``LearnableBeta`` signal still learns through ``arithmetic``,
    ``geometric`` and ``owa``); the ``precision`` weights are statistics and carry none.

    ``precision`` updates the running mean and variance of every signal's β first, from the values of every
    rank (so all ranks weigh alike), then weighs with the updated variances, the order β-DPO uses for its
    margin statistics. The first update starts the statistics from that batch (``num_updates``).

    In eval mode (validation) the signals are called in eval mode too (the shipped rules then update nothing),
    no statistic moves, every pair counts and the fused β is β0, so the validation loss is DPO's; the logged
    values and weights say what the signals propose and how the operator would weigh them now.

    YAML (the signals' names are yours; they name the logged metrics ``beta/fusion/<name>/...``)::

        rule:
          class_path: lit_align.losses.beta_fusion.FusionBeta
          init_args:
            operator: arithmetic
            signals:
              fixed: {class_path: lit_align.losses.beta_rules.FixedBeta}
              margin: {class_path: lit_align.losses.beta_rules.MarginBeta, init_args: {alpha: 0.5}}

    Args:
        signals: Name → β rule. Names may not contain ``.``.
        operator: ``arithmetic``, ``geometric``, ``precision`` or ``owa`` (see the module docstring).
        weights: One non-negative weight per signal, in the order of ``signals`` (per rank, largest β first,
            for ``owa``); normalised to sum 1. Default: equal.
        momentum: γ of the running mean and variance that ``precision`` keeps of each signal's β.
        min_variance: Added to every variance by ``precision``, so that a constant signal gets a large, finite
            weight.
    """

    def __init__(
        self,
        signals: dict[str, BetaRule],
        operator: FusionOperator = "arithmetic",
        weights: list[float] | None = None,
        momentum: float = 0.9,
        min_variance: float = 1e-8,
    ) -> None:
        super().__init__()
        if not signals:
            raise ValueError("signals is empty: name at least one β rule, e.g. {fixed: FixedBeta}")
        for name, signal in signals.items():
            if not name or "." in name:
                raise ValueError(f"signal name {name!r} must be non-empty and contain no '.'")
            if not isinstance(signal, BetaRule):
                raise ValueError(
                    f"signals.{name} must be a β rule (a lit_align.losses.beta_rules.BetaRule), "
                    f"got {type(signal).__name__}"
                )
        if operator not in get_args(FusionOperator):
            raise ValueError(f"operator {operator!r} is unknown; expected one of {', '.join(get_args(FusionOperator))}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not (math.isfinite(min_variance) and min_variance > 0):
            raise ValueError(f"min_variance must be positive, got {min_variance}")
        self.signals = nn.ModuleDict(signals)
        self.operator = operator
        self.momentum = momentum
        self.min_variance = min_variance
        # Not persistent: the weights are the recipe's setting, a checkpoint must not override them.
        self.register_buffer("weights", normalised_weights(weights, list(signals)), persistent=False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("beta_mean", torch.zeros(len(signals)))
        self.register_buffer("beta_var", torch.zeros(len(signals)))
        self._last: dict[str, torch.Tensor] = {}

    def forward(self, margins: torch.Tensor, beta: float, gather: Gather | None = None) -> BetaDecision:
        margins = margins.detach().reshape(-1)
        decisions = [signal(margins, beta, gather) for signal in self.signals.values()]
        betas, per_pair = self._stack(decisions, margins.numel())
        keep = torch.stack([decision.keep.reshape(-1) for decision in decisions]).all(0)
        if self.training and self.operator == "precision":
            self._update(betas, gather)
        fused, weights = self._fuse(betas)
        if self.training:
            everyone_kept = gather(keep.float()).reshape(-1) if gather is not None else keep.float()
        else:
            fused, keep, everyone_kept = torch.full_like(fused, float(beta)), self._keep_all(margins), None
        fused = fused if per_pair else fused.reshape(())
        self._last = {
            "beta/used": fused.detach().mean(),
            "beta/used_std": fused.detach().std(correction=0) if per_pair else torch.zeros_like(fused.detach()),
            "filter/kept_fraction": everyone_kept.mean() if everyone_kept is not None else torch.tensor(1.0),
        }
        for name, values, weight in zip(self.signals, betas.detach(), weights.detach(), strict=True):
            self._last[f"beta/fusion/{name}/value"] = values.mean()
            self._last[f"beta/fusion/{name}/weight"] = weight
        return BetaDecision(fused, keep)

    def _stack(self, decisions: list[BetaDecision], n_pairs: int) -> tuple[torch.Tensor, bool]:
        """The signals' β as ``[K, n]`` float32 (n = pairs when any is per pair, else 1), and whether any is."""
        for name, decision in zip(self.signals, decisions, strict=True):
            if decision.beta.dim() != 0 and tuple(decision.beta.shape) != (n_pairs,):
                raise ValueError(
                    f"FusionBeta signal {name!r} ({type(self.signals[name]).__name__}) returned a beta of shape "
                    f"{tuple(decision.beta.shape)}; a β rule returns a scalar or one β per pair, ({n_pairs},)"
                )
        per_pair = any(decision.beta.dim() == 1 for decision in decisions)
        n = n_pairs if per_pair else 1
        return torch.stack([decision.beta.float().reshape(-1).expand(n) for decision in decisions]), per_pair

    @torch.no_grad()
    def _update(self, betas: torch.Tensor, gather: Gather | None) -> None:
        values = betas.detach()
        if gather is not None:  # world-major [world · K · n] -> [K, world · n]
            values = gather(values.reshape(-1)).reshape(-1, *values.shape).transpose(0, 1).reshape(len(betas), -1)
        mean, var = update_moments(self.beta_mean, self.beta_var, values, self.momentum, self.num_updates == 0)
        self.beta_mean.copy_(mean)
        self.beta_var.copy_(var)
        self.num_updates += 1

    def _fuse(self, betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused ``[n]`` and each signal's effective weight ``[K]`` (for ``owa``, its mean over the pairs)."""
        if self.operator == "arithmetic":
            return arithmetic_fusion(betas, self.weights), self.weights
        if self.operator == "geometric":
            return geometric_fusion(betas, self.weights), self.weights
        if self.operator == "precision":
            weights = precision_weights(self.weights, self.beta_var, self.min_variance)
            return arithmetic_fusion(betas, weights), weights
        fused, received = owa_fusion(betas, self.weights)
        return fused, received.mean(-1)

    def metrics(self) -> dict[str, torch.Tensor]:
        """The fused β (``beta/used``, ``beta/used_std`` over this rank's pairs), each signal's mean β and weight,
        the kept share over all ranks, and each signal's own metrics under ``beta/fusion/<name>/``."""
        if not self._last:
            return {}
        metrics = dict(self._last)
        for name, signal in self.signals.items():
            for key, value in signal.metrics().items():
                if not key.startswith("beta/used"):
                    metrics[f"beta/fusion/{name}/{key}"] = value.detach()
        return metrics
