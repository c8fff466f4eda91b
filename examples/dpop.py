"""DPO-Positive (Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive").

A new algorithm in lit_align is one subclass that overrides `preference_loss`. DPOP adds a penalty that keeps
the policy's log-prob of the chosen answer from falling below the reference's:
loss = -logsigmoid(beta * (h - lam * max(0, reference_chosen - policy_chosen))).
Use it with:  lit_align fit --config configs/quickstart/dpo.yaml --model examples.dpop.DPOPModule
"""

import torch
import torch.nn.functional as F

from lit_align.losses import preference_metrics
from lit_align.modules import DPOModule, PreferenceLogps


class DPOPModule(DPOModule):
    def __init__(self, model_name_or_path: str, lam: float = 50.0, **kwargs) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.lam = lam

    def preference_loss(self, logps: PreferenceLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen = logps.policy_chosen - logps.reference_chosen
        rejected = logps.policy_rejected - logps.reference_rejected
        penalty = torch.clamp(logps.reference_chosen - logps.policy_chosen, min=0)
        loss = -F.logsigmoid(self.beta * (chosen - rejected - self.lam * penalty)).mean()
        metrics = preference_metrics(
            self.beta * chosen.detach(), self.beta * rejected.detach(), logps.policy_chosen, logps.policy_rejected
        )
        return loss, {**metrics, "dpop/penalty": penalty.mean()}
