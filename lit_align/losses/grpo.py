"""The GRPO loss family: `GRPOLoss`, the object a recipe names, and the formulas it evaluates as pure functions.

GRPO needs no value network: each prompt is sampled ``group_size`` times and a completion's advantage is its
reward compared with its group's (`group_advantages`). The policy then follows PPO's clipped surrogate per token
(`clipped_surrogate`), optionally pulled towards a reference by a per-token KL estimate (`k3_kl`). The variants
differ only in how the per-token losses become one number (`aggregate_tokens`), which sets how much a long
completion weighs against a short one. The definitions are TRL 1.16's, token-level importance sampling, so
curves compare one to one with a TRL run.

Nothing here knows about models, sampling, devices or logging; cross-rank sums come in as ``gather``.

References:
- GRPO: Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
  Models", arXiv 2402.03300.
- Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", arXiv 2503.20783.
- DAPO: Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", arXiv 2503.14476.
- BNPO: TRL's name for the token mean over the local batch.
- k3: J. Schulman 2020, "Approximating KL Divergence" (blog note).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from lit_align.checks import ConfigError, check_between
from lit_align.losses.base import Gather, LossOutput

ScaleRewards = Literal["group", "batch", "none"]
GRPOLossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]

STD_EPSILON = 1e-4
"""Added to the reward std before dividing (TRL's value): keeps a near-zero spread from exploding advantages."""

_KEY = "model.init_args.loss.init_args"


def nanstd(values: Tensor, dim: int | None = None) -> Tensor:
    """Bessel-corrected std ignoring NaN, as TRL's ``nanstd``: NaN where fewer than 2 values are present."""
    if dim is None:
        values, dim = values.reshape(-1), 0
    count = (~values.isnan()).sum(dim=dim)
    squares = torch.nansum((values - torch.nanmean(values, dim=dim, keepdim=True)) ** 2, dim=dim)
    std = (squares / (count - 1).clamp(min=1)).sqrt()
    return torch.where(count > 1, std, torch.full_like(std, float("nan")))


def group_advantages(
    rewards: Tensor, group_size: int, scale_rewards: ScaleRewards = "group", gather: Gather | None = None
) -> tuple[Tensor, Tensor]:
    """Each completion's reward against its group's: ``(advantages [N], zero_std [N] bool)``.

    ``rewards`` is ``[N]`` with ``N = prompts * group_size`` and each prompt's completions contiguous; NaN marks a
    completion no reward could score. With ``mean`` the group's nanmean:

    - ``group`` (GRPO): ``A = (r - mean) / (std_group + 1e-4)``;
    - ``batch``: ``A = (r - mean) / (std_batch + 1e-4)``, the std over the whole batch on every rank (``gather``
      concatenates the rewards of all ranks). Liu et al. (Dr. GRPO) show that the per-group std favours prompts
      that are too easy or too hard; the batch std keeps the scale without that bias;
    - ``none`` (Dr. GRPO): ``A = r - mean``.

    stds are Bessel-corrected over the scored rewards only. An unscored completion gets ``A = 0``: it carries no
    signal and must not move the baseline. ``zero_std`` is True for each member of a group whose scored rewards
    are all equal or that has fewer than 2 of them; such a group gets ``A = 0`` exactly (no learning signal). TRL
    flags by the batch std under ``batch``; we flag by group under every setting, because what the metric
    ``frac_reward_zero_std`` is read for is the share of prompts that teach nothing.

    Example, ``group``, group_size 4, rewards ``[1, 0, 0, 1 | 1, 1, 1, 1]``: group 1 has mean 0.5 and
    std ``sqrt(4 * 0.25 / 3) = 0.57735``, so ``A = ±0.5 / 0.57745 = ±0.86588``; group 2 has zero spread:
    ``A = 0`` and ``zero_std`` True for its four members.
    """
    if scale_rewards not in get_args(ScaleRewards):
        raise ValueError(f"scale_rewards must be one of {', '.join(get_args(ScaleRewards))}, got {scale_rewards!r}")
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by group_size={group_size} (one row of completions per "
            f"prompt), got shape {tuple(rewards.shape)}"
        )
    grouped = rewards.view(-1, group_size)
    scored = ~grouped.isnan()
    highest = torch.where(scored, grouped, -torch.inf).amax(dim=1)
    lowest = torch.where(scored, grouped, torch.inf).amin(dim=1)
    zero_std = (scored.sum(dim=1) < 2) | (highest == lowest)

    deviations = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    if scale_rewards == "group":
        deviations = deviations / (nanstd(grouped, dim=1).unsqueeze(1) + STD_EPSILON)
    elif scale_rewards == "batch":
        everyone = gather(rewards).reshape(-1) if gather is not None else rewards
        deviations = deviations / (nanstd(everyone) + STD_EPSILON)
    zero_std = zero_std.unsqueeze(1).expand_as(grouped)
    advantages = torch.where(zero_std | ~scored, torch.zeros_like(deviations), deviations)
    return advantages.nan_to_num(0.0).reshape(-1), zero_std.reshape(-1)


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy (Schulman's k3).

    With ``d = ref_logps - logps``: ``exp(d) - d - 1``. It is >= 0 everywhere (``e^d >= 1 + d``), unbiased, and
    has lower variance than ``-d``. Example: ``d = 0`` gives 0; ``d = 1`` gives ``e - 2 = 0.71828``.
    """
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def clipped_surrogate(
    logps: Tensor, old_logps: Tensor, advantages: Tensor, epsilon_low: float, epsilon_high: float
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate per token: ``(per_token_loss [N, L], ratio [N, L])``.

    ``r = exp(logps - old_logps)`` and ``loss = -min(r * A, clip(r, 1 - epsilon_low, 1 + epsilon_high) * A)``
    with the sequence's advantage ``A`` (``[N]``, broadcast over tokens). The min is pessimistic: a token whose
    ratio already moved past the clip in the advantage's direction gets no gradient, one that moved the other
    way keeps it. DAPO ("clip-higher") sets ``epsilon_high > epsilon_low`` so unlikely tokens can gain more.

    Example, eps 0.2: ``A = 2, r = 1.5`` gives ``-min(3, 2.4) = -2.4`` (clipped, no gradient);
    ``A = 2, r = 0.5`` gives ``-min(1, 1.6) = -1`` (not clipped); ``A = -1, r = 0.5`` gives ``-min(-0.5, -0.8) = 0.8``.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    return -torch.min(ratio * advantages, clipped * advantages), ratio


def aggregate_tokens(
    per_token_loss: Tensor,
    mask: Tensor,
    loss_type: GRPOLossType,
    max_completion_length: int,
    num_items: Tensor | float,
) -> Tensor:
    """The scalar loss from per-token losses ``[N, L]`` on the tokens where ``mask`` is 1.

    - ``grpo`` (Shao et al.): ``mean_i( sum_t loss_it / n_i )``, ``n_i`` the tokens of completion ``i``
      (at least 1). Each completion weighs the same, so a token of a long one weighs less: Liu et al. show this
      lets long wrong answers grow. A fully masked row counts as a 0 in the mean, as in TRL.
    - ``bnpo``: ``sum_it loss_it / sum_i n_i`` on this rank's batch: every token weighs the same.
    - ``dr_grpo`` (Liu et al.): ``sum_it loss_it / (N * max_completion_length)``: a constant normaliser, no
      length bias at all.
    - ``dapo`` (Yu et al.): ``sum_it loss_it / num_items``, ``num_items`` the completion tokens of the batch
      summed over all ranks and divided by the world size, so every token of the global batch weighs the same
      once DDP averages the ranks' gradients.

    Example: per-token losses ``[[-2, -2.4, -1], [1, 0.8, *]]`` (``*`` masked), ``max_completion_length`` 6:
    grpo ``(-5.4 / 3 + 1.8 / 2) / 2 = -0.45``; bnpo ``-3.6 / 5 = -0.72``; dr_grpo ``-3.6 / 12 = -0.3``;
    dapo with ``num_items`` 4: ``-3.6 / 4 = -0.9``.
    """
    mask = mask.to(per_token_loss.dtype)
    masked = per_token_loss * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        return masked.sum() / (per_token_loss.shape[0] * max_completion_length)
    if loss_type == "dapo":
        if isinstance(num_items, Tensor):
            return masked.sum() / num_items.to(per_token_loss.dtype).clamp(min=1)
        return masked.sum() / max(float(num_items), 1.0)
    raise ValueError(f"unknown GRPO loss_type {loss_type!r}; expected one of {', '.join(get_args(GRPOLossType))}")


def _global_masked_means(values: list[Tensor], mask: Tensor, gather: Gather | None) -> list[Tensor]:
    """Each ``[N, L]`` tensor's mean over the masked tokens of every rank (sums and count gathered together)."""
    mask = mask.to(torch.float32)
    totals = torch.stack([(value.detach().to(torch.float32) * mask).sum() for value in values] + [mask.sum()])
    if gather is not None:
        totals = gather(totals).reshape(-1, totals.numel()).sum(dim=0)
    return [total / totals[-1].clamp(min=1) for total in totals[:-1]]


def clip_fractions(
    ratio: Tensor,
    advantages: Tensor,
    mask: Tensor,
    epsilon_low: float,
    epsilon_high: float,
    gather: Gather | None = None,
) -> dict[str, Tensor]:
    """Shares of the tokens whose ratio is clipped, under TRL's names, over all ranks' tokens.

    ``low``: ``r < 1 - epsilon_low`` with ``A < 0``; ``high``: ``r > 1 + epsilon_high`` with ``A > 0``; ``region``:
    either. These are exactly the tokens `clipped_surrogate` gives no gradient. Example: of 5 tokens, one with
    ``A = 2, r = 1.5`` and one with ``A = -1, r = 0.5`` (eps 0.2): low 0.2, high 0.2, region 0.4.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    low = (ratio < 1 - epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    low_mean, high_mean, region_mean = _global_masked_means([low, high, low | high], mask, gather)
    return {"clip_ratio/low_mean": low_mean, "clip_ratio/high_mean": high_mean, "clip_ratio/region_mean": region_mean}


@dataclass
class RolloutLogps:
    """What the module hands `GRPOLoss` for one batch of sampled completions.

    Masked positions must hold finite numbers (any value): they are multiplied by 0, not dropped.
    """

    logps: Tensor  # [N, L] per completion token, with grad (policy, current weights)
    mask: Tensor  # [N, L] 1 on completion tokens the loss uses (0 on padding / masked truncated rows)
    advantages: Tensor  # [N]
    max_completion_length: int
    old_logps: Tensor | None = None  # [N, L] policy at sampling time; None -> logps.detach() (ratio exactly 1)
    ref_logps: Tensor | None = None  # [N, L] reference; needed when beta > 0


def _check_not_negative(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ConfigError(f"{key} must be a finite number >= 0, got {value!r}")


class GRPOLoss(nn.Module):
    """GRPO and its variants on one batch of sampled completions; the formulas are the functions above.

    ``loss = aggregate(clipped_surrogate + beta * k3_kl)``.

    With one optimisation step per sampled batch (``old_logps`` None) the ratio is exactly 1, so the loss value
    is ``-(weighted mean of A)``, about 0 with group-normalised advantages: watch the reward, not the loss. Its
    gradient is still REINFORCE's, ``-A * grad(logps)`` per token, aggregated as above.

    Args:
        loss_type: How per-token losses become one number: ``grpo`` (per-completion mean, then mean), ``bnpo``
            (token mean of this rank's batch), ``dr_grpo`` (sum over ``N * max_completion_length``) or ``dapo``
            (token mean of the global batch; TRL's default).
        epsilon: Lower clip range of the ratio, ``1 - epsilon`` (PPO's epsilon); in (0, 1).
        epsilon_high: Upper clip range, ``1 + epsilon_high``; None uses ``epsilon``. DAPO's clip-higher uses 0.28.
        beta: Weight of the k3 KL penalty towards the reference. 0 (TRL's default): the module runs no reference.
        use_bias_correction_kl: Multiply the per-token KL by the importance ratio ``r`` (TRL 1.16's default, from
            DeepSeek-V3.2, arXiv 2512.02556): completions were sampled from the old policy, and ``r * k3`` makes the
            KL's gradient the unbiased reverse-KL gradient. It changes the gradient even on-policy, where ``r = 1``
            but its gradient is not 0. Off: ``beta * k3`` as in DeepSeekMath.

    Logged: ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``, and ``kl`` (the masked
    mean of k3 over all ranks) when ``beta > 0``.
    """

    gather: Gather | None = None

    def __init__(
        self,
        loss_type: GRPOLossType = "dapo",
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        beta: float = 0.0,
        use_bias_correction_kl: bool = True,
    ) -> None:
        super().__init__()
        if loss_type not in get_args(GRPOLossType):
            raise ConfigError(f"{_KEY}.loss_type must be one of {', '.join(get_args(GRPOLossType))}, got {loss_type!r}")
        check_between(f"{_KEY}.epsilon", epsilon, 0, 1, low_open=True, high_open=True)
        if epsilon_high is not None:
            _check_not_negative(f"{_KEY}.epsilon_high", epsilon_high)
        _check_not_negative(f"{_KEY}.beta", beta)
        self.loss_type = loss_type
        self.epsilon_low = float(epsilon)
        self.epsilon_high = float(epsilon if epsilon_high is None else epsilon_high)
        self.beta = float(beta)
        self.use_bias_correction_kl = use_bias_correction_kl

    @property
    def reference_free(self) -> bool:
        return self.beta == 0

    def num_items(self, mask: Tensor) -> Tensor:
        """DAPO's normaliser: completion tokens summed over all ranks, divided by the number of ranks."""
        local = mask.sum().reshape(1).to(torch.float32)
        if self.gather is None:
            return local[0]
        everyone = self.gather(local).reshape(-1)
        return everyone.sum() / everyone.numel()

    def forward(self, inputs: RolloutLogps) -> LossOutput:
        logps, mask = inputs.logps, inputs.mask
        old_logps = logps.detach() if inputs.old_logps is None else inputs.old_logps
        per_token_loss, ratio = clipped_surrogate(
            logps, old_logps, inputs.advantages, self.epsilon_low, self.epsilon_high
        )
        metrics = clip_fractions(ratio, inputs.advantages, mask, self.epsilon_low, self.epsilon_high, self.gather)
        if self.beta > 0:
            if inputs.ref_logps is None:
                raise ValueError(
                    f"GRPOLoss has beta={self.beta} (a KL penalty) but was given no ref_logps: the module must "
                    f"compute the reference log-probs, or set {_KEY}.beta: 0"
                )
            kl = k3_kl(logps, inputs.ref_logps)
            weighted = kl * ratio if self.use_bias_correction_kl else kl
            per_token_loss = per_token_loss + self.beta * weighted
            (metrics["kl"],) = _global_masked_means([weighted.detach()], mask, self.gather)
        num_items = self.num_items(mask) if self.loss_type == "dapo" else 1.0
        loss = aggregate_tokens(per_token_loss, mask, self.loss_type, inputs.max_completion_length, num_items)
        return LossOutput(loss, metrics)
