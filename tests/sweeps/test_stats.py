"""Student-t quantiles and the per-setting mean, std and 95% interval."""

import math

import pytest

from lit_align.sweeps.stats import summarize, t_quantile_975


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706), (2, 4.303), (4, 2.776), (30, 2.042), (60, 2.000)])
def test_t_quantiles_match_the_printed_tables(df, expected):
    assert t_quantile_975(df) == pytest.approx(expected, abs=0.001)


def test_the_expansion_takes_over_smoothly_after_the_table():
    # t_{0.975} falls with df towards 1.95996; the step from the table (30) to the expansion (31) is 0.0028 in
    # scipy's values, so a seam would show as a jump.
    assert t_quantile_975(30) - t_quantile_975(31) == pytest.approx(0.00276, abs=0.0001)
    assert t_quantile_975(100) == pytest.approx(1.98397, abs=1e-5)
    assert t_quantile_975(10_000) == pytest.approx(1.95996 + 0.00024, abs=1e-5)


def test_t_quantile_needs_a_degree_of_freedom():
    with pytest.raises(ValueError, match="at least 1 degree"):
        t_quantile_975(0)


def test_summary_of_three_seeds():
    """mean 0.8; std sqrt((0.01 + 0 + 0.01) / 2) = 0.1; half width 4.302653 * 0.1 / sqrt(3) = 0.24841."""
    summary = summarize([0.7, 0.8, 0.9])
    assert summary.n == 3
    assert summary.mean == pytest.approx(0.8)
    assert summary.std == pytest.approx(0.1)
    assert summary.half_width == pytest.approx(0.24841, abs=1e-5)
    assert (summary.ci_low, summary.ci_high) == pytest.approx((0.8 - 0.24841, 0.8 + 0.24841), abs=1e-5)


def test_one_seed_has_a_mean_and_no_spread():
    summary = summarize([0.5])
    assert (summary.n, summary.mean, summary.std, summary.ci_low, summary.ci_high) == (1, 0.5, None, None, None)
    assert summary.half_width is None


def test_no_seeds_give_nothing():
    assert summarize([]).mean is None and summarize([]).n == 0


def test_two_equal_values_have_a_zero_width_interval():
    summary = summarize([0.25, 0.25])
    assert summary.std == 0.0 and summary.ci_low == summary.ci_high == 0.25
    assert not math.isnan(summary.half_width)
