"""How far each category's share is from the reference: the gap Δ_k = p̂_k − q_k and the ratio p̂_k/q_k,
each with an interval that includes the reference's own sampling error when q was measured."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from crayonbox.lab.stats.core import Reference, StatsResult, as_counts, as_reference, z_value
from crayonbox.lab.stats.proportions import wilson_bounds


@dataclass(frozen=True)
class GapResult(StatsResult):
    """Per-category gaps and ratios of the sample against a reference."""

    estimate: np.ndarray
    reference: np.ndarray
    gap: np.ndarray
    gap_se: np.ndarray
    gap_low: np.ndarray
    gap_high: np.ndarray
    ratio: np.ndarray
    log_ratio_se: np.ndarray
    ratio_low: np.ndarray
    ratio_high: np.ndarray
    n: int
    reference_n: int | None
    confidence: float
    simultaneous: bool


def reference_gaps(counts: ArrayLike, reference: Reference | ArrayLike, confidence: float = 0.95,
                   simultaneous: bool = False) -> GapResult:
    """Gap Δ_k = p̂_k − q_k and ratio p̂_k / q_k, each with a per-category interval.

    Gap: Wald SE sqrt(p̂(1−p̂)/n + q(1−q)/m) is reported (the second term only when q was estimated from m
    reference images), but the interval is Newcombe's hybrid score interval built from the two Wilson
    intervals, which behaves at small counts and near 0/1: Δ − sqrt((p̂−l₁)² + (u₂−q)²),
    Δ + sqrt((u₁−p̂)² + (q−l₂)²). With a fixed q it reduces to the Wilson interval of p̂ shifted by −q.
    Ratio: delta method on the log scale, SE² = (1−p̂)/(n p̂) + (1−q)/(m q); interval exp(log r ± z·SE).
    A zero count is replaced by 0.5 for the ratio's SE and bounds (Haldane), so they stay finite.
    Use `simultaneous=True` when reading all K categories at once (Bonferroni: level 1 − α/K each).
    """
    counts = as_counts(counts)
    ref = as_reference(reference, counts.size)
    n, k = int(counts.sum()), counts.size
    level = 1.0 - (1.0 - confidence) / k if simultaneous else confidence
    z = z_value(level)
    p, q = counts / n, ref.q

    var_p = p * (1 - p) / n
    var_q = q * (1 - q) / ref.n if ref.estimated else np.zeros(k)
    gap = p - q
    l1, u1 = wilson_bounds(counts, n, z)
    if ref.estimated:
        l2, u2 = wilson_bounds(ref.counts, ref.n, z)
    else:
        l2 = u2 = q
    gap_low = gap - np.sqrt((p - l1) ** 2 + (u2 - q) ** 2)
    gap_high = gap + np.sqrt((u1 - p) ** 2 + (q - l2) ** 2)

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(q > 0, p / q, np.nan)
        x_adj = np.where(counts == 0, 0.5, counts)
        log_r = np.log(x_adj / n)
        se2 = 1.0 / x_adj - 1.0 / n
        if ref.estimated:
            y_adj = np.where(ref.counts == 0, 0.5, ref.counts)
            log_r = log_r - np.log(y_adj / ref.n)
            se2 = se2 + 1.0 / y_adj - 1.0 / ref.n
        else:
            log_r = log_r - np.log(q)
        se = np.sqrt(se2)
        defined = np.isfinite(log_r)
        ratio_low = np.where(defined, np.exp(log_r - z * se), np.nan)
        ratio_high = np.where(defined, np.exp(log_r + z * se), np.nan)
    return GapResult(estimate=p, reference=q, gap=gap, gap_se=np.sqrt(var_p + var_q), gap_low=gap_low,
                     gap_high=gap_high, ratio=ratio, log_ratio_se=np.where(defined, se, np.nan),
                     ratio_low=ratio_low, ratio_high=ratio_high, n=n, reference_n=ref.n,
                     confidence=confidence, simultaneous=simultaneous)
