"""Confidence intervals for one proportion x/n: Wilson (the default) and Clopper–Pearson (exact)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from crayonbox.lab.stats.core import StatsResult, as_count_and_n, check_confidence, z_value


@dataclass(frozen=True)
class Interval(StatsResult):
    """A point estimate with a two-sided interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str

    @property
    def half_width(self) -> float:
        """Half the interval's length (the "±" people quote)."""
        return (self.high - self.low) / 2.0


def wilson_bounds(count: ArrayLike, n: ArrayLike, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised Wilson score bounds for counts x out of n at critical value z (statsmodels'
    `proportion_confint(method="wilson")` at α = 2·(1 − Φ(z)))."""
    low, high = proportion_confint(np.asarray(count, dtype=float), np.asarray(n, dtype=float),
                                   alpha=2.0 * float(stats.norm.sf(z)), method="wilson")
    # Clip float noise so that p̂ = 0 gives exactly 0 and p̂ = 1 gives exactly 1.
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def wilson_interval(count: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion.

    Use it by default: it stays inside [0, 1], never has zero width at x = 0 or x = n, and its coverage is
    close to nominal down to n ≈ 10 (the Wald interval p̂ ± z·SE is not). Example: 8/9 → [0.565, 0.980];
    4500/5000 → [0.891, 0.908].
    """
    x, n = as_count_and_n(count, n)
    low, high = wilson_bounds(x, n, z_value(confidence))
    return Interval(estimate=x / n, low=float(low), high=float(high), confidence=confidence, method="wilson")


def clopper_pearson_interval(count: int, n: int, confidence: float = 0.95) -> Interval:
    """Clopper–Pearson ("exact") interval from beta quantiles.

    low = Beta⁻¹(α/2; x, n−x+1), high = Beta⁻¹(1−α/2; x+1, n−x), with low = 0 at x = 0 and high = 1 at x = n.
    Use it when counts are small and guaranteed coverage (≥ nominal, so conservative) matters more than
    width, e.g. "0 of 300 images showed X" (upper bound ≈ 3/n). statsmodels' method="beta".
    """
    x, n = as_count_and_n(count, n)
    check_confidence(confidence)
    low, high = proportion_confint(x, n, alpha=1.0 - confidence, method="beta")
    low, high = (0.0 if x == 0 else float(low)), (1.0 if x == n else float(high))
    return Interval(estimate=x / n, low=low, high=high, confidence=confidence, method="clopper-pearson")
