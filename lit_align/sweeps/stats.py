"""Mean, sample standard deviation and a Student-t 95% confidence interval of a handful of seeds.

A sweep has 3 to 10 seeds per setting, so the normal 1.96 would make the intervals far too narrow (with 3 seeds
the right factor is 4.30). The t quantiles come from a table for 1 to 30 degrees of freedom and from the
Cornish-Fisher expansion of the t quantile around the normal one beyond (error below 1e-7 from 30 on), so that
no scipy is needed for the one number it would provide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

T_975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)  # fmt: skip
"""t_{0.975} for 1..30 degrees of freedom (index df - 1)."""

Z_975 = 1.959963984540054
"""The standard normal 0.975 quantile."""


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom: the factor of a two-sided 95% interval.

    Beyond the table, the Cornish-Fisher expansion in 1/df (Abramowitz & Stegun 26.7.5), with z = 1.959964:
    t = z + g1/df + g2/df^2 + g3/df^3 + g4/df^4, where g1 = (z^3 + z)/4, g2 = (5z^5 + 16z^3 + 3z)/96,
    g3 = (3z^7 + 19z^5 + 17z^3 - 15z)/384, g4 = (79z^9 + 776z^7 + 1482z^5 - 1920z^3 - 945z)/92160."""
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class Summary:
    """n values: their mean, sample standard deviation (n - 1) and 95% interval of the mean; None where n < 2."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None or self.mean is None else self.ci_high - self.mean


def summarize(values: list[float]) -> Summary:
    """Mean, std and the t interval mean ± t_{0.975, n-1} · std / √n of ``values`` (seeds of one setting).

    No values: everything None; one value: the mean alone (a spread needs two)."""
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)
