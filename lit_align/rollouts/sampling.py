"""How completions are sampled during RL training: one settings object shared by the generation backends."""

from __future__ import annotations

from dataclasses import dataclass

from lit_align.checks import check_at_least, check_between


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling of the policy's completions (TRL's ``GRPOConfig`` names).

    Greedy decoding (validation accuracy) uses ``max_completion_length`` alone.
    """

    max_completion_length: int = 256
    """Longest completion in tokens; a completion that has not ended by then is truncated (counted in
    ``completions/clipped_ratio``)."""
    temperature: float = 1.0
    """Sampling temperature. GRPO's loss scores the completions under the same ``softmax(logits / temperature)``
    they were sampled from (policy, old policy and reference alike), as TRL does."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens whose probability reaches ``top_p``; 1.0 keeps all."""
    top_k: int = 0
    """Keep only the ``top_k`` most likely tokens; 0 keeps all."""

    def __post_init__(self) -> None:
        check_at_least("sampling.max_completion_length", self.max_completion_length, 1)
        check_between("sampling.temperature", self.temperature, 0, 100, low_open=True)
        check_between("sampling.top_p", self.top_p, 0, 1, low_open=True)
        check_at_least("sampling.top_k", self.top_k, 0)
