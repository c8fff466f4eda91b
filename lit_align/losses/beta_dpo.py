"""β-DPO: the sigmoid DPO loss with a β and a set of training pairs chosen per batch by a replaceable rule.

Wu et al. 2024, "β-DPO: Direct Preference Optimization with Dynamic β". The default rule,
``BatchAdaptiveBeta``, is the paper's (as the authors' code implements it); ``FixedBeta`` turns the loss back
into DPO, ``LearnableBeta`` optimises β with the policy and ``MarginBeta`` gives each pair its own β
(`lit_align.losses.beta_rules`); ``FusionBeta`` combines several of them (`lit_align.losses.beta_fusion`). The
arithmetic is in `lit_align.losses.beta_margins`. A per-pair β reaches `dpo_loss` as a ``[B]`` tensor.

The rule is a submodule of the loss, so its buffers go into checkpoints and its parameters to the optimizer.
"""

from __future__ import annotations

from lit_align.losses.base import LossOutput, PreferenceLoss
from lit_align.losses.beta_margins import beta_dpo_margins
from lit_align.losses.beta_rules import BatchAdaptiveBeta, BetaRule
from lit_align.losses.dpo import check_dpo_arguments, dpo_loss, preference_metrics
from lit_align.losses.logps import PreferenceLogps


class BetaDPOLoss(PreferenceLoss):
    """Mean of ``-log σ(β·h)`` (with ``label_smoothing`` as in DPO) over the pairs the rule keeps, β from the rule.

    Logged rewards use ``beta`` (β0) for every pair, so they compare with a DPO run's; the rule's own metrics
    (``beta/used``, ``margin/ema_mean``, ...) are logged beside them. Under DDP the rule gathers margins from every
    rank (``gather``, set by the module), which needs the same number of pairs on each rank.

    Args:
        beta: β0, the base β the rule scales; also the β of the logged rewards.
        rule: How β is chosen per batch; default ``BatchAdaptiveBeta()`` (α 0.6, keep 0.8, momentum 0.9).
        label_smoothing: As DPO's (conservative DPO).
    """

    def __init__(self, beta: float = 0.1, rule: BetaRule | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        check_dpo_arguments("sigmoid", label_smoothing)
        self.beta = float(beta)
        self.rule = rule if rule is not None else BatchAdaptiveBeta()
        self.label_smoothing = label_smoothing

    def forward(self, logps: PreferenceLogps) -> LossOutput:
        margins = beta_dpo_margins(
            logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected
        )
        decision = self.rule(margins, self.beta, gather=self.gather)
        out = dpo_loss(
            logps.policy_chosen,
            logps.policy_rejected,
            logps.reference_chosen,
            logps.reference_rejected,
            beta=decision.beta,
            loss_type="sigmoid",
            label_smoothing=self.label_smoothing,
        )
        kept = out.losses[decision.keep]
        loss = kept.mean() if kept.numel() else out.losses.sum() * 0.0
        chosen_rewards = self.beta * (logps.policy_chosen - logps.reference_chosen).detach()
        rejected_rewards = self.beta * (logps.policy_rejected - logps.reference_rejected).detach()
        metrics = preference_metrics(chosen_rewards, rejected_rewards, logps.policy_chosen, logps.policy_rejected)
        return LossOutput(loss, {**metrics, **self.rule.metrics()})
