"""Correcting observed shares for a classifier's known mistakes.

An instrument that labels a true "woman" as "man" 10% of the time biases every share it reports. Its
confusion on held-out labelled renders tells by how much, and inverting that gives the true shares — at the
price of a wider interval, because both the generated sample and the validation set are finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import StatsResult, as_count_and_n, as_counts, check_confidence, z_value


@dataclass(frozen=True)
class RoganGladenResult(StatsResult):
    """Binary prevalence corrected for sensitivity and specificity."""

    observed: float
    n: int
    sensitivity: float
    specificity: float
    estimate: float
    unclipped: float
    se: float
    low: float
    high: float
    confidence: float


def rogan_gladen(count: int, n: int, sensitivity: float, specificity: float, sensitivity_n: int | None = None,
                 specificity_n: int | None = None, confidence: float = 0.95) -> RoganGladenResult:
    """Rogan–Gladen estimator π̂ = (p̂ + Sp − 1)/(Se + Sp − 1) for a binary attribute.

    Se = P(instrument says yes | truly yes) and Sp = P(says no | truly no), from a validation set with
    `sensitivity_n` truly-positive and `specificity_n` truly-negative items (None = known exactly). The
    delta-method variance inflates the binomial one by 1/J², J = Se + Sp − 1, and adds the validation error:
    Var π̂ = [p̂(1−p̂)/n + π̂² Se(1−Se)/n_Se + (1−π̂)² Sp(1−Sp)/n_Sp] / J². The estimate is clipped to [0, 1]
    (the raw value is kept as `unclipped`); the Wald interval is built around the raw value, then clipped.
    """
    x, n = as_count_and_n(count, n)
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not 0.0 <= value <= 1.0:
            raise CrayonboxError(f"{name} must be between 0 and 1, got {value}")
    youden = sensitivity + specificity - 1.0
    if youden <= 0.0:
        raise CrayonboxError(f"sensitivity + specificity − 1 = {youden:.3f}: the instrument is no better "
                             "than chance, so its counts cannot be corrected; validate or replace it")
    p = x / n
    raw = (p + specificity - 1.0) / youden
    pi = min(max(raw, 0.0), 1.0)
    var = p * (1.0 - p) / n
    if sensitivity_n is not None:
        var += pi**2 * sensitivity * (1.0 - sensitivity) / sensitivity_n
    if specificity_n is not None:
        var += (1.0 - pi) ** 2 * specificity * (1.0 - specificity) / specificity_n
    se = float(np.sqrt(var)) / youden
    z = z_value(confidence)
    return RoganGladenResult(observed=p, n=n, sensitivity=sensitivity, specificity=specificity, estimate=pi,
                             unclipped=raw, se=se, low=max(raw - z * se, 0.0), high=min(raw + z * se, 1.0),
                             confidence=confidence)


def project_to_simplex(v: ArrayLike) -> np.ndarray:
    """Euclidean projection of each row of v onto the probability simplex {π ≥ 0, Σπ = 1}
    (sort-based algorithm of Duchi et al. 2008). Rows already on the simplex are returned unchanged."""
    v = np.asarray(v, dtype=float)
    k = v.shape[-1]
    u = -np.sort(-v, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    support = (u - css / np.arange(1, k + 1) > 0).sum(axis=-1, keepdims=True)
    theta = np.take_along_axis(css, support - 1, axis=-1) / support
    return np.maximum(v - theta, 0.0)


@dataclass(frozen=True)
class CorrectionResult(StatsResult):
    """Multiclass shares corrected for the instrument's confusion matrix, with bootstrap intervals."""

    observed: np.ndarray
    estimate: np.ndarray
    unconstrained: np.ndarray
    low: np.ndarray
    high: np.ndarray
    confusion: np.ndarray
    condition_number: float
    n: int
    validation_n: np.ndarray
    confidence: float
    draws: int


def correct_for_confusion(counts: ArrayLike, confusion_counts: ArrayLike, confidence: float = 0.95,
                          draws: int = 2000, seed: int = 0) -> CorrectionResult:
    """Correct observed category counts with the instrument's validation confusion counts.

    `confusion_counts[i, j]` = validation items whose true class is i and that the instrument labelled j
    (include "no person"/"unclear" as classes). With M = row-normalised confusion, observed shares are
    p = Mᵀπ, so π̂ = (Mᵀ)⁻¹p̂, projected onto the simplex when sampling noise pushes it outside. The
    interval is a percentile bootstrap that resamples *both* the n generated images (Multinomial(n, p̂))
    and every validation row (Multinomial(n_i, M_i)), `draws` times with a fixed `seed`.
    """
    counts = as_counts(counts)
    check_confidence(confidence)
    if draws < 10:
        raise CrayonboxError(f"draws must be at least 10 for a bootstrap interval, got {draws}")
    conf = np.asarray(confusion_counts, dtype=float)
    k = counts.size
    if conf.shape != (k, k):
        raise CrayonboxError(f"the confusion matrix must be {k}×{k} (true × predicted) to match {k} "
                             f"categories, got shape {conf.shape}")
    if np.any(conf < 0) or np.any(conf != np.round(conf)):
        raise CrayonboxError("confusion counts must be non-negative whole numbers")
    rows = conf.sum(axis=1)
    if np.any(rows == 0):
        missing = np.flatnonzero(rows == 0).tolist()
        raise CrayonboxError(f"no validation items of true class(es) {missing}: add labelled renders of "
                             "every class before correcting")
    m = conf / rows[:, None]
    condition = float(np.linalg.cond(m))
    if not np.isfinite(condition) or condition > 1e8:
        raise CrayonboxError("the instrument's confusion matrix is singular: some classes cannot be told "
                             "apart (merge them or improve the instrument), so counts cannot be corrected")
    n = int(counts.sum())
    p = counts / n
    raw = np.linalg.solve(m.T, p)

    rng = np.random.default_rng(seed)
    p_star = rng.multinomial(n, p, size=draws) / n
    # m_star[b, i, :] is validation row i resampled; pinv keeps a resample that happens to be singular usable.
    m_star = np.stack([rng.multinomial(int(rows[i]), m[i], size=draws) / rows[i] for i in range(k)], axis=1)
    pi_star = project_to_simplex((np.linalg.pinv(m_star.transpose(0, 2, 1)) @ p_star[:, :, None])[:, :, 0])
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(pi_star, [tail, 1.0 - tail], axis=0)
    return CorrectionResult(observed=p, estimate=project_to_simplex(raw), unconstrained=raw, low=low,
                            high=high, confusion=m, condition_number=condition, n=n,
                            validation_n=rows.astype(np.int64), confidence=confidence, draws=draws)
