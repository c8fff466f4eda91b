"""The arithmetic of β-DPO (`lit_align.losses.beta_dpo`): running margin statistics, margin-guided filtering and
the batch β, and the per-pair β of ``MarginBeta``.

β-DPO (Wu et al. 2024, "β-DPO: Direct Preference Optimization with Dynamic β", NeurIPS 2024) argues that
the best β depends on how informative a batch is: pairs whose implicit-reward margin is far above the
running average are easy and can take a larger β, pairs below it a smaller one. It also drops the pairs
least typical of the running margin distribution, as outliers. Everything here follows the authors'
public code (``junkangwu/beta-DPO``, ``trainers.py``: ``update_and_sync_tensor_mean`` and the
``beta_DPO`` branch of ``preference_loss``) rather than the paper's prose where the two differ in detail, except
``margin_pair_beta``: that one is ours, the paper's argument carried from the batch to the pair.

These are pure functions of tensors. The running statistics are state, and state lives in buffers of the
rule that uses these functions (``lit_align.losses.beta_rules.BatchAdaptiveBeta``, inside ``BetaDPOLoss``), so
a checkpoint carries it and a resumed run continues it.
"""

from __future__ import annotations

import torch

MIN_BETA = 1e-3
"""Lower clamp of the batch β, as in the authors' code: a batch far below the running mean cannot turn β
negative (which would reward the rejected answer)."""


def beta_dpo_margins(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """Implicit-reward margin of each pair without β, detached: it steers β, it is not trained through.

    ``M_i = (log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))``, per-sequence sums as the
    authors use (``average_log_prob=False``). Example: policy -1 and -3, reference -2 and -2 give
    ``M = (-1 + 2) - (-3 + 2) = 2``.
    """
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    return (chosen - rejected).detach()


def update_margin_stats(
    mean: torch.Tensor, std: torch.Tensor, batch_margins: torch.Tensor, momentum: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exponential moving averages of the margins' mean and standard deviation; returns new tensors.

    With ``γ = momentum``: ``M0 ← γ·M0 + (1 - γ)·mean(M)`` and ``σ ← γ·σ + (1 - γ)·std(M)``, both started at
    0 by the caller, exactly as the authors' ``update_and_sync_tensor_mean`` (γ = 0.9). There is no bias
    correction: after the first batch ``M0`` is a tenth of the batch mean, as in their runs.

    ``std`` is the unbiased (Bessel-corrected) one, ``torch.std``'s default, which is what the authors call.
    A batch of one margin has no unbiased spread (``torch.std`` gives NaN, which would poison the average
    for good): its std average is left unchanged, the mean is still updated.

    Example: ``M = [3, 2, 0, -1]`` from zero: batch mean 1, std sqrt(10/3) = 1.825742, so ``M0 = 0.1`` and
    ``σ = 0.182574``; the same batch again gives ``M0 = 0.9·0.1 + 0.1 = 0.19`` and ``σ = 0.346891``.
    """
    batch_margins = batch_margins.detach().reshape(-1).to(mean.dtype)
    new_mean = momentum * mean + (1 - momentum) * batch_margins.mean()
    if batch_margins.numel() < 2:
        return new_mean, std.clone()
    return new_mean, momentum * std + (1 - momentum) * batch_margins.std()


def _log_weights(margins: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    std = torch.as_tensor(std, dtype=margins.dtype, device=margins.device)
    if std <= 0:
        return torch.zeros_like(margins)
    return -0.5 * ((margins - mean) / std) ** 2


def margin_weights(margins: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """Gaussian weight of each pair under the running margin distribution: ``exp(-0.5·((M_i - M0)/σ)²)``.

    Pairs near the running mean weigh 1, a pair 2σ away ``e^-2 = 0.135``. When ``σ = 0`` (every margin
    so far identical, e.g. at the first step when the policy still equals the reference) every weight is 1:
    the authors' code would divide by zero there. Example: ``M0 = 1, σ = 2`` and ``M = [3, 2, 0, -1]``
    give ``z = [1, 0.5, -0.5, -1]`` and weights ``[e^-0.5, e^-0.125, e^-0.125, e^-0.5]``.
    """
    return _log_weights(margins, mean, std).exp()


def kept_count(n_pairs: int, keep_fraction: float) -> int:
    """``floor(n·keep_fraction)`` pairs, at least one: the authors' ``int(n * (1 - mode_weight))``.

    The floor (not a rounding) is theirs; with their batch of 64 and ρ = 0.2 it keeps 51. The ``1e-9``
    absorbs float error (``0.57 * 100 = 56.999…``); the floor of one is ours (they would keep no pair and
    average an empty batch into NaN).
    """
    return max(1, min(n_pairs, int(n_pairs * keep_fraction + 1e-9)))


def filter_pairs(
    margins: torch.Tensor,
    mean: torch.Tensor | float,
    std: torch.Tensor | float,
    keep_fraction: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean mask of the pairs that train: ``kept_count(n, keep_fraction)`` indices drawn without
    replacement with probability proportional to ``margin_weights`` (``torch.multinomial``, as the authors).

    ``keep_fraction`` is ``1 - ρ``, with ρ the fraction dropped (the paper's filtering ratio, 0.2). The draw
    is random, not a cut-off: a typical pair is usually kept, an outlier usually dropped, and either can
    happen. The weights are shifted by their maximum in log space before ``exp`` so that they never all
    underflow to 0 (far outliers with a small σ); that rescaling leaves the sampling distribution unchanged.
    With ``keep_fraction = 1`` every pair is kept and no random number is drawn.
    """
    n = margins.numel()
    k = kept_count(n, keep_fraction)
    keep = torch.zeros(n, dtype=torch.bool, device=margins.device)
    if k >= n:
        return keep.fill_(True)
    log_weights = _log_weights(margins.detach().reshape(-1).float(), mean, std)
    weights = (log_weights - log_weights.max()).exp().clamp(min=torch.finfo(torch.float32).tiny)
    keep[torch.multinomial(weights, k, replacement=False, generator=generator)] = True
    return keep


def batch_beta(beta: float, alpha: float, kept_margins: torch.Tensor, mean: torch.Tensor | float) -> torch.Tensor:
    """The batch's β: ``β0·(1 + α·(mean(M_kept) - M0))``, clamped at ``MIN_BETA`` and detached.

    ``M_kept`` are the margins of the pairs the filter kept, ``M0`` the running mean *after* this batch
    updated it (the authors' order). A batch more separable than usual gets a larger β. With ``α = 0``
    this is ``β0``. Example: ``β0 = 0.1, α = 0.6, M0 = 0.19``, kept margins ``[3, 2, 0]`` (mean 5/3):
    ``0.1·(1 + 0.6·(1.666667 - 0.19)) = 0.188600``.
    """
    shift = kept_margins.detach().float().mean() - torch.as_tensor(mean, dtype=torch.float32)
    return (beta * (1 + alpha * shift)).clamp(min=MIN_BETA).detach()


def margin_pair_beta(
    margins: torch.Tensor, beta: float, alpha: float, mean: torch.Tensor | float, std: torch.Tensor | float
) -> torch.Tensor:
    """One β per pair: ``β_i = β0·(1 + α·tanh((M_i - M0)/σ))``, detached, ``[B]``.

    ``tanh`` bounds β in ``(β0(1 - α), β0(1 + α))`` however far a margin lies from the running mean, so with
    ``α < 1`` it stays positive and needs no clamp. ``σ = 0`` (every margin so far identical, as at the first
    step when the policy equals the reference) gives ``z = 0`` and β0 for every pair rather than a division by
    zero. Example: ``β0 = 0.1, α = 0.5, M0 = 1, σ = 2`` and ``M = [3, 2, 0, -1]`` give ``z = [1, 0.5, -0.5, -1]``,
    ``tanh z = [0.761594, 0.462117, -0.462117, -0.761594]`` and ``β = [0.138080, 0.123106, 0.076894, 0.061920]``.
    """
    margins = margins.detach().reshape(-1).float()
    std = torch.as_tensor(std, dtype=torch.float32, device=margins.device)
    if std <= 0:
        return torch.full_like(margins, float(beta))
    z = (margins - torch.as_tensor(mean, dtype=torch.float32, device=margins.device)) / std
    return beta * (1 + alpha * torch.tanh(z))
