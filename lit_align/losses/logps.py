"""What every preference loss reads: per-pair log-probabilities, summed over completion tokens.

The module computes these from its forward passes (policy and reference, chosen and rejected) and hands them
to the loss as one object; the loss never sees a model, a batch or a tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class PreferenceLogps:
    """Per-pair sums of completion-token log-probs, ``[n_pairs]`` each, and the completion lengths they were
    summed over."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    chosen_sequence_nll: torch.Tensor | None = None
    """Mean NLL over every token of the chosen sequence, prompt included; computed only for a loss that sets
    ``sequence_nll`` (ORPO's NLL term on prompt and answer)."""
    plain_policy_chosen: torch.Tensor | None = None
    """The policy's chosen log-probs on the input without guidance; computed only for a loss that sets
    ``plain_logps`` (preference-guided DPO). The other fields then hold the guided passes."""
    plain_policy_rejected: torch.Tensor | None = None

    def averaged(self) -> PreferenceLogps:
        """The same log-probs divided by the completion length (per-token averages)."""
        c, r = self.chosen_tokens.clamp(min=1), self.rejected_tokens.clamp(min=1)
        plain_c, plain_r = self.plain_policy_chosen, self.plain_policy_rejected
        return replace(
            self,
            policy_chosen=self.policy_chosen / c,
            policy_rejected=self.policy_rejected / r,
            reference_chosen=self.reference_chosen / c,
            reference_rejected=self.reference_rejected / r,
            plain_policy_chosen=None if plain_c is None else plain_c / c,
            plain_policy_rejected=None if plain_r is None else plain_r / r,
        )

    def chosen_mean_nll(self) -> torch.Tensor:
        """Per-pair mean NLL of the chosen completion's tokens (RPO's term; ORPO's without the prompt)."""
        return -self.policy_chosen / self.chosen_tokens.clamp(min=1)
