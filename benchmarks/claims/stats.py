"""Means, standard deviations, Welch's t interval and the verdict of one comparison.

Pure Python (no SciPy): the Student t quantile comes from the regularised
incomplete beta function (a continued fraction) inverted by bisection.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
TOO_FEW = "not run"  # fewer than 2 finished seeds in an arm: no interval yet


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for a single value."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log(1.0 - x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (real, > 0) degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t, by bisection on :func:`t_cdf`."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2.0


@dataclasses.dataclass(frozen=True)
class Difference:
    """``a - b`` of two arms' means with Welch's 95% interval."""

    delta: float
    low: float
    high: float
    df: Optional[float]  # Welch-Satterthwaite degrees of freedom (None: both spreads 0)


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Difference of means with Welch's t interval (unequal variances); both need >= 2 values."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's interval needs at least 2 values per arm, got {len(a)} and {len(b)}.")
    delta = mean(a) - mean(b)
    va, vb = std(a) ** 2 / len(a), std(b) ** 2 / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(delta, delta, delta, None)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return Difference(delta, delta - half, delta + half, df)


def verdict(diff: Optional[Difference], margin: float = 0.0, min_effect: float = 0.0) -> str:
    """The claim "``a - b > margin``" at 95%: reproduced when the interval lies above
    ``margin``, not reproduced when it lies below ``margin + min_effect`` (``a`` loses, or
    the interval rules out a gain of ``min_effect``), else inconclusive at this budget.
    ``margin < 0`` states a parity claim (``a`` no worse than ``b`` by more than -margin)."""
    if diff is None:
        return TOO_FEW
    if diff.low > margin:
        return REPRODUCED
    if diff.high < margin + min_effect:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def needs_more_seeds(a: Sequence[float], b: Sequence[float]) -> bool:
    """The margin lies within 2 standard deviations (the larger arm's): 5 seeds, not 3."""
    if len(a) < 2 or len(b) < 2:
        return False
    return abs(mean(a) - mean(b)) < 2.0 * max(std(a), std(b))
