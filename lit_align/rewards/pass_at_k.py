"""pass@k: the chance that at least one of k samples is correct, estimated without bias from n >= k samples.

Drawing exactly k samples per question gives a noisy estimate; drawing n and counting c correct, the
probability that a random k-subset holds no correct sample is C(n-c, k) / C(n, k) (Chen et al. 2021,
"Evaluating Large Language Models Trained on Code", the Codex paper), so pass@k = 1 - C(n-c, k) / C(n, k).
"""

from __future__ import annotations

from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one question with ``c`` correct among ``n`` samples (exact integer binomials).

    Example: n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k} (draw at least k samples)")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - comb(n - c, k) / comb(n, k)
