"""DPO-Positive (Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive").

A new algorithm in lit_align is one loss class. DPOP adds a penalty that keeps the policy's log-prob of the chosen
answer from falling below the reference's:
loss = -logsigmoid(beta * (h - lam * max(0, reference_chosen - policy_chosen))).
Train with it:
    lit_align fit --config configs/quickstart/dpo.yaml \\
        --model.init_args.loss.class_path examples.dpop.DPOPLoss --model.init_args.loss.init_args.lam 50
"""

import torch
import torch.nn.functional as F

from lit_align.losses import LossOutput, PreferenceLogps, PreferenceLoss, preference_metrics


class DPOPLoss(PreferenceLoss):
    def __init__(self, beta: float = 0.1, lam: float = 50.0) -> None:
        super().__init__()
        self.beta, self.lam = beta, lam

    def forward(self, logps: PreferenceLogps) -> LossOutput:
        chosen = logps.policy_chosen - logps.reference_chosen
        rejected = logps.policy_rejected - logps.reference_rejected
        penalty = torch.clamp(logps.reference_chosen - logps.policy_chosen, min=0)
        loss = -F.logsigmoid(self.beta * (chosen - rejected - self.lam * penalty)).mean()
        metrics = preference_metrics(
            self.beta * chosen.detach(), self.beta * rejected.detach(), logps.policy_chosen, logps.policy_rejected
        )
        return LossOutput(loss, {**metrics, "dpop/penalty": penalty.mean()})
