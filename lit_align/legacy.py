"""Checkpoints from before losses were objects, read in today's shape.

``lit_align fit --ckpt_path`` rebuilds the module from the hyper-parameters the checkpoint holds (LightningCLI
parses them over the recipe). Until the loss redesign those named ``DPOModule``, ``ORPOModule``, ``BetaDPOModule``
or a ``PreferenceGuidedDPOModule`` that carried the loss's arguments (``beta``, ``loss_type``, ``lam``,
``beta_rule``, ``alpha``, ``guidance_text``) itself. `upgrade_hparams` rewrites them into a ``PreferenceModule``
(or the guided module) with the same loss under ``loss:``, so such a checkpoint resumes the run it came from.
The rule's state (``beta_rule.*`` in the state dict) is renamed by ``PreferenceModule.on_load_checkpoint``.
"""

from __future__ import annotations

from typing import Any

_DPO_ARGUMENTS = ("beta", "loss_type", "label_smoothing", "simpo_gamma", "length_penalty", "rpo_alpha")
_PREFERENCE_MODULE = "lit_align.modules.PreferenceModule"
_GUIDED_MODULE = "lit_align.modules.preference_guided.PreferenceGuidedDPOModule"
_OLD_CLASSES = {
    "lit_align.modules.DPOModule": "dpo",
    "lit_align.modules.dpo.DPOModule": "dpo",
    "lit_align.modules.orpo.ORPOModule": "orpo",
    "lit_align.modules.beta_dpo.BetaDPOModule": "beta_dpo",
    _GUIDED_MODULE: "guided",
}


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """Old-shape hyper-parameters (with ``_class_path``) in the shape of today's modules; others unchanged."""
    kind = _OLD_CLASSES.get(hparams.get("_class_path", ""))
    if kind is None or "loss" in hparams:
        return hparams
    upgraded = dict(hparams)
    dpo = {name: upgraded.pop(name) for name in _DPO_ARGUMENTS if name in upgraded}
    if kind == "dpo":
        loss = ("lit_align.losses.DPOLoss", dpo)
    elif kind == "orpo":
        orpo = {name: upgraded.pop(name) for name in ("lam", "nll_on_prompt") if name in upgraded}
        loss = ("lit_align.losses.ORPOLoss", orpo)  # DPO's arguments were refused unless at their defaults
    elif kind == "beta_dpo":
        rule = upgraded.pop("beta_rule", None)
        arguments = {name: dpo[name] for name in ("beta", "label_smoothing") if name in dpo}
        if rule is not None:  # the rule's own beta0 had to equal the module's: the loss's beta now
            rule_arguments = {k: v for k, v in rule.get("init_args", {}).items() if k != "beta"}
            arguments["rule"] = {"class_path": rule["class_path"], "init_args": rule_arguments}
        loss = ("lit_align.losses.BetaDPOLoss", arguments)
    else:
        upgraded.pop("guidance_text", None)  # a data setting now: data.guidance_text in the recipe
        dpo.pop("simpo_gamma", None)  # SimPO averages log-probs: the guided loss never took it
        loss = ("lit_align.losses.PreferenceGuidedLoss", {"alpha": upgraded.pop("alpha", 0.01), **dpo})
    upgraded["_class_path"] = _GUIDED_MODULE if kind == "guided" else _PREFERENCE_MODULE
    upgraded["loss"] = {"class_path": loss[0], "init_args": loss[1]}
    return upgraded
