"""β-DPO: DPO whose β and set of training pairs are chosen per batch by a replaceable rule.

Wu et al. 2024, "β-DPO: Direct Preference Optimization with Dynamic β". The default rule,
``BatchAdaptiveBeta``, is the paper's (as the authors' code implements it); ``FixedBeta`` turns the module
back into DPO and ``LearnableBeta`` optimises β with the policy. A new rule is a ``BetaRule`` subclass
named in YAML under ``model.init_args.beta_rule``; the module never changes for it.

The rule is a submodule, so its buffers go into checkpoints and its parameters to the optimizer. It is
kept out of the hyperparameters as an object (checkpoints must load with ``torch.load(weights_only=True)``):
they hold its ``{class_path, init_args}`` instead, which this constructor also accepts.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch

from lit_align.losses.beta_dpo import beta_dpo_margins
from lit_align.losses.beta_rules import BatchAdaptiveBeta, BetaRule, Gather
from lit_align.losses.dpo import dpo_loss, preference_metrics
from lit_align.modules.dpo import DPOModule, PreferenceLogps


class BetaDPOModule(DPOModule):
    """DPO with the sigmoid loss, β and the kept pairs decided by ``beta_rule`` for each batch.

    The loss is the mean of ``-log σ(β·h)`` (with ``label_smoothing`` as in DPO) over the pairs the rule
    keeps. Logged rewards use the module's ``beta`` (β0) for every pair, so they compare with a DPO run's;
    the rule's own metrics (``beta/used``, ...) are logged beside them.

    Under DDP the rule gathers margins from every rank, which needs the same number of pairs on each rank.

    Args:
        beta_rule: How β is chosen; default ``BatchAdaptiveBeta`` with the module's ``beta``. Its β0 must equal
            ``beta``. Every other argument is ``DPOModule``'s (``loss_type`` must stay ``sigmoid``).
    """

    def __init__(self, model_name_or_path: str, beta_rule: BetaRule | None = None, **kwargs) -> None:
        rule = _rule_from_config(beta_rule) if isinstance(beta_rule, dict) else beta_rule
        # The base's save_hyperparameters reads the arguments from this frame: it must find a description here.
        beta_rule = _rule_config(rule) if rule is not None else None
        super().__init__(model_name_or_path, **kwargs)
        if self.loss_type != "sigmoid":
            raise ValueError(f"BetaDPOModule trains the sigmoid DPO loss; got loss_type {self.loss_type!r}")
        self.beta_rule = rule if rule is not None else BatchAdaptiveBeta(beta=self.beta)
        rule_beta = getattr(self.beta_rule, "beta", self.beta)
        if rule_beta != self.beta:
            raise ValueError(
                f"beta_rule has beta {rule_beta} but the module has beta {self.beta}: set both "
                "(model.init_args.beta and model.init_args.beta_rule.init_args.beta) to the same value"
            )

    def _gather(self) -> Gather | None:
        if self._trainer is None or self.trainer.world_size <= 1:
            return None
        return lambda tensor: self.all_gather(tensor).reshape(-1)

    def preference_loss(self, logps: PreferenceLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        margins = beta_dpo_margins(
            logps.policy_chosen, logps.policy_rejected, logps.reference_chosen, logps.reference_rejected
        )
        decision = self.beta_rule(margins, gather=self._gather())
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
        return loss, {**metrics, **self.beta_rule.metrics()}


def _rule_config(rule: BetaRule) -> dict[str, Any]:
    """``{class_path, init_args}`` of a rule: constructor arguments read back from same-named attributes."""
    cls = type(rule)
    init_args = {}
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        value = getattr(rule, name, None)
        if isinstance(value, (bool, int, float, str)):
            init_args[name] = value
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def _rule_from_config(config: dict[str, Any]) -> BetaRule:
    module_name, _, class_name = config["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**config.get("init_args", {}))
