"""Intervals and paired tests on inputs whose answers are computed by hand here."""

from __future__ import annotations

import math

import pytest

from release.experiment import stats


def test_bootstrap_interval_of_constant_scores_is_the_point() -> None:
    interval = stats.bootstrap_interval([0.75] * 9)
    assert interval is not None
    assert (interval.mean, interval.low, interval.high, interval.n) == (0.75, 0.75, 0.75, 9)
    assert "bootstrap" in interval.method


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean() -> None:
    scores = [1.0] * 15 + [0.0] * 5  # mean 0.75
    first, again = stats.bootstrap_interval(scores), stats.bootstrap_interval(scores)
    assert first == again  # fixed seed: the same lines give the same interval
    assert first is not None and first.low < 0.75 < first.high
    # the normal approximation of a proportion's interval, sqrt(p(1-p)/n) = 0.0968: the percentile
    # bootstrap agrees to within a few hundredths (0.75 -/+ 1.96 * 0.0968 = [0.560, 0.940])
    assert first.low == pytest.approx(0.75 - 1.96 * math.sqrt(0.75 * 0.25 / 20), abs=0.06)
    assert first.high == pytest.approx(0.75 + 1.96 * math.sqrt(0.75 * 0.25 / 20), abs=0.06)


def test_no_interval_below_two_lines_and_no_nan_accepted() -> None:
    assert stats.bootstrap_interval([]) is None
    assert stats.bootstrap_interval([1.0]) is None
    with pytest.raises(ValueError):
        stats.bootstrap_interval([1.0, math.nan])


def test_mcnemar_exact_p_on_a_small_table() -> None:
    # 7 discordant pairs: a right only once, b right 6 times; plus 5 lines both right, 2 both wrong.
    # exact two-sided p = 2 * P(X <= 1), X ~ Binomial(7, 1/2) = 2 * (1 + 7) / 128 = 0.125
    a = [1.0] * 1 + [0.0] * 6 + [1.0] * 5 + [0.0] * 2
    b = [0.0] * 1 + [1.0] * 6 + [1.0] * 5 + [0.0] * 2
    result = stats.paired_test(a, b)
    assert result.method == stats.MCNEMAR
    assert result.p_value == pytest.approx(0.125)
    assert result.n == 14 and result.difference == pytest.approx((6 - 11) / 14)
    assert not result.significant(0.05) and result.significant(0.2)
    # 0 vs 8 discordant: p = 2 / 256
    assert stats.mcnemar_p([0.0] * 8, [1.0] * 8) == pytest.approx(2 / 256)
    assert stats.mcnemar_p([1.0, 0.0], [1.0, 0.0]) == 1.0  # no discordant pair


def test_paired_bootstrap_for_continuous_scores() -> None:
    a = [0.9, 0.8, 0.85, 0.95, 0.9, 0.88, 0.92, 0.87, 0.91, 0.89]
    shifted = [x - 0.2 for x in a]  # every line exactly 0.2 worse: the difference has no spread
    result = stats.paired_test(a, shifted)
    assert result.method == stats.PAIRED_BOOTSTRAP
    assert result.difference == pytest.approx(0.2)
    assert result.low == pytest.approx(0.2) and result.high == pytest.approx(0.2)
    assert result.p_value == 0.0 and result.significant(0.05)
    same = stats.paired_test(a, a)
    assert same.p_value == 1.0 and same.difference == 0.0
    noisy = stats.paired_test(a, [x + (0.01 if i % 2 else -0.01) for i, x in enumerate(a)])
    assert noisy.p_value is not None and noisy.p_value > 0.5  # +-0.01 around zero: no difference


def test_one_sample_tests_against_a_recorded_value() -> None:
    # 2 of 10 right against a recorded 0.9: exact binomial two-sided p = P(X <= 2 | n=10, p=0.9)
    # (no outcome of the other tail is as unlikely as X = 2)
    result = stats.one_sample_test([1.0, 1.0] + [0.0] * 8, 0.9)
    expected = sum(math.comb(10, k) * 0.9**k * 0.1 ** (10 - k) for k in range(3))
    assert result.method == stats.BINOMIAL_VS_VALUE
    assert result.p_value == pytest.approx(expected, rel=1e-6)
    assert result.difference == pytest.approx(0.2 - 0.9)
    level = stats.one_sample_test([0.5, 0.5, 0.5], 0.5)
    assert level.p_value == 1.0 and level.method == stats.BOOTSTRAP_VS_VALUE
