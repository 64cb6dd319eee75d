"""Statistics over evaluation lines: bootstrap intervals and paired tests (numpy, scipy).

Shapes: every function takes per-line scores (sequences of floats, one per dataset line; for a
paired test two sequences of the same lines, in the same order) and returns a frozen dataclass
whose fields are plain floats, safe to write as JSON (never NaN: a value that cannot be computed
is ``None``).

* :func:`bootstrap_interval`: the 95 % confidence interval of a metric's mean over lines, by the
  percentile bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13;
  ``scipy.stats.bootstrap``, https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.bootstrap.html)
  with a fixed seed: the same lines always give the same interval. Scores with few distinct
  values (0/1, ratings) are resampled in the equivalent multinomial form (numpy), which is fast
  on 10,000 lines.
* :func:`paired_test`: two variants on the same lines. For 0/1 scores (accuracy-like metrics), the
  exact McNemar test: a two-sided binomial test (p = 0.5) on the discordant pairs
  (McNemar 1947; ``scipy.stats.binomtest``). For other scores, the paired bootstrap of the mean
  difference; its two-sided p-value is twice the smaller tail of the bootstrap distribution
  around 0 (Efron & Tibshirani, ch. 16), so ``p < alpha`` exactly when the ``1 - alpha``
  percentile interval of the difference excludes 0.
* :func:`one_sample_test`: a variant against a recorded value when the other side has no lines
  (a baseline known only by its metric): exact binomial test for 0/1 scores, bootstrap otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

SEED = 20261130  # fixed: intervals and p-values are reproducible run to run
RESAMPLES = 2000
CONFIDENCE = 0.95
FEW_LEVELS = 20  # up to this many distinct scores: the multinomial form of the same bootstrap
MCNEMAR = "McNemar exact test (two-sided binomial test on discordant pairs)"
PAIRED_BOOTSTRAP = f"paired bootstrap of the mean difference ({RESAMPLES} resamples, seed {SEED})"
PERCENTILE_BOOTSTRAP = f"percentile bootstrap over lines ({RESAMPLES} resamples, seed {SEED})"
BINOMIAL_VS_VALUE = "exact binomial test against the recorded value"
BOOTSTRAP_VS_VALUE = f"bootstrap of the mean against the recorded value ({RESAMPLES} resamples, seed {SEED})"


@dataclass(frozen=True)
class Interval:
    """``low <= mean <= high``: the confidence interval of the mean of ``n`` line scores."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    method: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on ``n`` paired lines: ``difference = mean(a) - mean(b)``.

    ``low``/``high`` bound the difference (paired bootstrap, ``confidence``); ``p_value`` is
    two-sided; ``None`` where it cannot be computed (no lines)."""

    mean_a: float | None
    mean_b: float | None
    difference: float | None
    low: float | None
    high: float | None
    p_value: float | None
    n: int
    method: str
    confidence: float = CONFIDENCE

    def significant(self, alpha: float) -> bool:
        return self.p_value is not None and self.p_value < alpha

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (bool excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def is_binary(scores: Sequence[float]) -> bool:
    """True when every score is 0 or 1 (an accuracy-like metric)."""
    return len(scores) > 0 and all(s in (0.0, 1.0) for s in scores)


def _array(scores: Sequence[float]) -> np.ndarray:
    values = np.asarray([float(s) for s in scores], dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite numbers")
    return values


def _bootstrap(values: np.ndarray, confidence: float) -> tuple[float, float, np.ndarray]:
    """Percentile interval and the bootstrap distribution of the mean of ``values``."""
    if np.all(values == values[0]):  # no spread: every resample has the same mean
        mean = float(values[0])
        return mean, mean, np.full(RESAMPLES, mean)
    levels, counts = np.unique(values, return_counts=True)
    if len(levels) <= FEW_LEVELS:
        # Few distinct scores (0/1 metrics, 1-5 ratings): resampling n lines with replacement draws
        # how often each score occurs from Multinomial(n, observed shares), so the bootstrap means
        # come from those counts in O(levels) per resample instead of O(lines): the same
        # distribution, fast on 10,000 lines.
        rng = np.random.default_rng(SEED)
        draws = rng.multinomial(values.size, counts / values.size, size=RESAMPLES)
        distribution = draws @ levels / values.size
        alpha = (1 - confidence) / 2
        low, high = np.quantile(distribution, [alpha, 1 - alpha])
        return float(low), float(high), distribution
    result = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    ci = result.confidence_interval
    return float(ci.low), float(ci.high), np.asarray(result.bootstrap_distribution)


def bootstrap_interval(scores: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """The ``confidence`` interval of the mean of ``scores``; None for fewer than 2 lines.

    Constant scores give ``low == high == mean``. Raises ValueError on a non-finite score."""
    values = _array(scores)
    if values.size < 2:
        return None
    low, high, _ = _bootstrap(values, confidence)
    mean = float(values.mean())
    return Interval(mean, min(low, mean), max(high, mean), int(values.size), confidence, PERCENTILE_BOOTSTRAP)


def _two_sided(distribution: np.ndarray, value: float) -> float:
    below = float(np.mean(distribution <= value))
    above = float(np.mean(distribution >= value))
    return min(1.0, 2.0 * min(below, above))


def mcnemar_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided McNemar p-value for paired 0/1 scores (1.0 when no pair disagrees)."""
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x == 1.0 and y == 0.0)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if x == 0.0 and y == 1.0)
    if a_only + b_only == 0:
        return 1.0
    return float(stats.binomtest(a_only, a_only + b_only, 0.5, alternative="two-sided").pvalue)


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """``a`` against ``b`` on the same lines (``a[i]`` and ``b[i]`` score line i)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same lines: {len(a)} != {len(b)}")
    x, y = _array(a), _array(b)
    binary = is_binary(a) and is_binary(b)
    method = MCNEMAR if binary else PAIRED_BOOTSTRAP
    if x.size == 0:
        return Comparison(None, None, None, None, None, None, 0, method, confidence)
    diff = x - y
    mean_diff = float(diff.mean())
    if x.size < 2:
        low = high = mean_diff
        distribution = np.full(RESAMPLES, mean_diff)
    else:
        low, high, distribution = _bootstrap(diff, confidence)
    if binary:
        p = mcnemar_p(a, b)
    elif np.all(diff == 0):
        p = 1.0
    else:
        p = _two_sided(distribution, 0.0)
    return Comparison(
        float(x.mean()),
        float(y.mean()),
        mean_diff,
        min(low, mean_diff),
        max(high, mean_diff),
        p,
        int(x.size),
        method,
        confidence,
    )


def one_sample_test(scores: Sequence[float], value: float, confidence: float = CONFIDENCE) -> Comparison:
    """The lines' mean against a recorded ``value`` (the other side has no lines)."""
    x = _array(scores)
    binary = is_binary(scores) and 0.0 <= value <= 1.0
    method = BINOMIAL_VS_VALUE if binary else BOOTSTRAP_VS_VALUE
    if x.size == 0:
        return Comparison(None, value, None, None, None, None, 0, method, confidence)
    mean = float(x.mean())
    if x.size < 2:
        low = high = mean
        distribution = np.full(RESAMPLES, mean)
    else:
        low, high, distribution = _bootstrap(x, confidence)
    if binary:
        p = float(stats.binomtest(int(x.sum()), int(x.size), value, alternative="two-sided").pvalue)
    else:
        p = 1.0 if mean == value else _two_sided(distribution, value)
    return Comparison(
        mean, value, mean - value, low - value, high - value, p, int(x.size), method, confidence
    )
