"""Guidance dose–response: how an attribute's share moves with `condition_scale`.

A bias present at scale 1 comes from the model's conditional distribution; one that grows with the scale is
*created* by guidance (logits_uncond + s·(logits_cond − logits_uncond) sharpens whatever the condition
tilts towards). The slope of a logistic regression on log₂(scale) measures that growth per doubling.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm
from numpy.typing import ArrayLike

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import StatsResult, check_confidence, z_value
from crayonbox.lab.stats.proportions import wilson_bounds

PREDICTORS = ("log2", "linear")


@dataclass(frozen=True)
class DoseResponseResult(StatsResult):
    """Per-scale shares with Wilson intervals, and the logistic slope with its interval and p-value."""

    scales: np.ndarray
    successes: np.ndarray
    totals: np.ndarray
    shares: np.ndarray
    share_low: np.ndarray
    share_high: np.ndarray
    predictor: str
    intercept: float
    slope: float
    slope_se: float
    slope_low: float
    slope_high: float
    slope_p: float
    odds_ratio: float
    dispersion: float
    confidence: float


def dose_response(scales: ArrayLike, successes: ArrayLike, totals: ArrayLike, predictor: str = "log2",
                  confidence: float = 0.95, overdispersed: bool = False) -> DoseResponseResult:
    """Attribute share against condition scale.

    Rows are (scale, successes, totals); several rows per scale (e.g. one per prompt) are allowed and are
    pooled for the per-scale Wilson intervals. The binomial GLM logit P(attr) = β₀ + β₁·x, x = log₂(scale)
    ("log2", the default: β₁ = change in log-odds per doubling of the scale, `odds_ratio` = e^β₁) or
    x = scale ("linear"), is fitted by statsmodels; the slope's Wald interval and p-value test "guidance
    does not change the share". Set `overdispersed=True` when rows are prompts whose shares differ more than
    binomially: the variance is then scaled by Pearson χ²/df (quasi-binomial), widening the interval.
    """

    check_confidence(confidence)
    if predictor not in PREDICTORS:
        raise CrayonboxError(f"unknown predictor {predictor!r}; choose one of {PREDICTORS}")
    s = np.asarray(scales, dtype=float)
    y = np.asarray(successes, dtype=float)
    m = np.asarray(totals, dtype=float)
    if s.ndim != 1 or s.shape != y.shape or s.shape != m.shape:
        raise CrayonboxError("scales, successes and totals must be 1-D lists of the same length")
    if np.any(m < 1) or np.any(y < 0) or np.any(y > m):
        raise CrayonboxError("each row needs ≥ 1 image and 0 ≤ successes ≤ its total")
    if predictor == "log2" and np.any(s <= 0):
        raise CrayonboxError("condition scales must be > 0 for a log₂ predictor; use predictor='linear'")
    levels = np.unique(s)
    if levels.size < 2:
        raise CrayonboxError("a dose–response needs at least two different condition scales")
    if y.sum() == 0 or y.sum() == m.sum():
        raise CrayonboxError("the attribute is present in none or all images, so no slope can be estimated")

    pooled_y = np.array([y[s == v].sum() for v in levels])
    pooled_m = np.array([m[s == v].sum() for v in levels])
    z = z_value(confidence)
    low, high = wilson_bounds(pooled_y, pooled_m, z)

    x = np.log2(s) if predictor == "log2" else s
    design = sm.add_constant(x, has_constant="add")
    # Proportions with var_weights = trials, not a (successes, failures) endog: statsmodels' Pearson scale
    # ("X2") is only right in this form (with two columns it comes out divided by the trial count).
    model = sm.GLM(y / m, design, family=sm.families.Binomial(), var_weights=m)
    with warnings.catch_warnings():
        # Quasi-separation (a share of 0 or 1 at one scale) still gives a usable, if wide, Wald interval.
        warnings.simplefilter("ignore")
        fit = model.fit(scale="X2" if overdispersed else None)
    intercept, slope = (float(v) for v in fit.params)
    slope_se = float(fit.bse[1])
    return DoseResponseResult(
        scales=levels, successes=pooled_y.astype(np.int64), totals=pooled_m.astype(np.int64),
        shares=pooled_y / pooled_m, share_low=low, share_high=high, predictor=predictor, intercept=intercept,
        slope=slope, slope_se=slope_se, slope_low=slope - z * slope_se, slope_high=slope + z * slope_se,
        slope_p=float(fit.pvalues[1]), odds_ratio=float(np.exp(slope)), dispersion=float(fit.scale),
        confidence=confidence)
