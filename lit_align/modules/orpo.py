"""ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model") as a DPOModule.

ORPO needs the policy's log-probs of chosen and rejected, which ``DPOModule`` already computes in one
concatenated forward, and an NLL on the chosen sequence, which it computes when asked
(``needs_chosen_sequence_nll``). The reference is always ``none``: no frozen copy is loaded and no reference
forward runs, so a step costs one forward and backward of the policy, as in SFT.

DPO's ``beta`` does not exist in ORPO: ``lam`` weighs the odds-ratio term against the NLL (TRL calls it
``beta``). ``beta``, ``loss_type`` and DPO's other loss arguments come with ``DPOModule``'s constructor, so
the CLI lists them, but nothing reads them: ORPO recipes leave them out, and a value other than the default
is an error rather than silently ignored (someone coming from TRL would set ``beta`` expecting ORPO's weight).
"""

from __future__ import annotations

import inspect

import torch

from lit_align.losses.dpo import preference_metrics
from lit_align.losses.orpo import orpo_loss
from lit_align.modules.dpo import DPOModule, PreferenceLogps

_UNUSED_DPO_ARGUMENTS = (
    "beta",
    "loss_type",
    "label_smoothing",
    "simpo_gamma",
    "length_penalty",
    "rpo_alpha",
    "reference_model_name_or_path",
)


class ORPOModule(DPOModule):
    """ORPO: SFT on the chosen answer plus an odds-ratio preference term, without a reference model.

    Args:
        lam: Weight of the odds-ratio term, the paper's lambda (0.1 to 0.25 in the paper; TRL's ``beta``).
        nll_on_prompt: NLL over every token of the chosen sequence, prompt included, as in the authors' code
            (their default). ``False`` restricts it to the chosen completion's tokens, as TRL's ORPOTrainer does.
            Either way it is a per-sequence mean over tokens, then a mean over pairs.

    Logged besides the loss, with TRL's ORPO names and definitions: ``nll_loss`` (the NLL term),
    ``log_odds_ratio`` (mean of ``logsigmoid(log_odds)``, so minus the unweighted odds-ratio loss),
    ``log_odds_chosen`` (mean of ``log_odds``), ``rewards/*`` (``lam`` times the average log-probs) and
    ``logps/chosen`` and ``logps/rejected`` (per-token *averages*, the log-probs ORPO works with and TRL logs
    for ORPO; DPO logs sums).
    """

    def __init__(self, model_name_or_path: str, lam: float = 0.2, nll_on_prompt: bool = True, **kwargs) -> None:
        reference = kwargs.pop("reference", "none")
        if reference != "none":
            raise ValueError(f"ORPO has no reference model: reference must be 'none' (or unset), got {reference!r}")
        defaults = inspect.signature(DPOModule.__init__).parameters
        for name in _UNUSED_DPO_ARGUMENTS:
            if name in kwargs and name in defaults and kwargs[name] != defaults[name].default:
                raise ValueError(f"ORPO does not use DPO's {name} (got {kwargs[name]!r}); its weight is lam")
        super().__init__(model_name_or_path, reference="none", **kwargs)
        self.lam = lam
        self.nll_on_prompt = nll_on_prompt
        self.needs_chosen_sequence_nll = nll_on_prompt

    def preference_loss(self, logps: PreferenceLogps) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        averaged = logps.averaged()
        if not self.nll_on_prompt:
            chosen_nll = -averaged.policy_chosen
        elif logps.chosen_sequence_nll is None:
            raise ValueError("nll_on_prompt needs chosen_sequence_nll (set needs_chosen_sequence_nll)")
        else:
            chosen_nll = logps.chosen_sequence_nll
        out = orpo_loss(averaged.policy_chosen, averaged.policy_rejected, chosen_nll, lam=self.lam)
        metrics = preference_metrics(
            out.chosen_rewards, out.rejected_rewards, averaged.policy_chosen, averaged.policy_rejected
        )
        metrics["nll_loss"] = chosen_nll.detach().mean()
        metrics["log_odds_ratio"] = out.log_odds_ratio.mean()
        metrics["log_odds_chosen"] = out.log_odds_chosen.mean()
        return out.losses.mean(), metrics
