"""The published-style bias score (DALL-Eval / HEIM "MAD") with the noise floor it never came with.

MAD = (1/K) Σ_k |p̂_k − 1/K|. For K = 2 this equals the gender score |p̂ − 0.5|; for the 10 Monk bins it is
HEIM's skin score. Even a perfectly balanced model scores well above 0 at the n = 8–9 images those
evaluations used, so every MAD must be read next to E_null[MAD | n, K] and a p-value.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import gammaln

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import StatsResult, as_counts


def mad_score(counts: ArrayLike) -> float:
    """(1/K) Σ |p̂_k − 1/K| for a count vector (K = 2 gives |p̂ − 0.5|)."""
    counts = as_counts(counts)
    return float(_mad_rows(counts[None, :])[0])


def _mad_rows(counts: np.ndarray) -> np.ndarray:
    """MAD of every row of a (rows, K) count matrix."""
    k = counts.shape[1]
    p = counts / counts.sum(axis=1, keepdims=True)
    return np.abs(p - 1.0 / k).mean(axis=1)


def mad_noise_floor(n: int, k: int) -> float:
    """E_null[MAD | n, K]: the MAD a perfectly balanced model scores on average with n images.

    Exact for every K: under the uniform null each p̂_k is Binomial(n, 1/K)/n, so by linearity of expectation
    E[MAD] = E|X/n − 1/K| with X ~ Binomial(n, 1/K), one finite sum. Gender (K=2): 0.137 at n=8, 0.056 at
    n=50, 0.020 at n=400; Monk (K=10): 0.086 at n=8, 0.033 at n=50.
    """
    if n < 1 or k < 2 or n != int(n) or k != int(k):
        raise CrayonboxError(f"the noise floor needs n ≥ 1 images and K ≥ 2 categories, got n={n}, K={k}")
    x = np.arange(n + 1)
    return float((stats.binom.pmf(x, n, 1.0 / k) * np.abs(x / n - 1.0 / k)).sum())


@dataclass(frozen=True)
class MADResult(StatsResult):
    """An observed MAD, the balanced model's expected MAD at the same n, and P_null(MAD ≥ observed)."""

    n: int
    k: int
    mad: float
    null_mean: float
    excess: float
    p_value: float
    method: str
    draws: int


def mad_test(counts: ArrayLike, draws: int = 20_000, seed: int = 0,
             max_enumeration: int = 200_000) -> MADResult:
    """MAD with its noise floor and a p-value against a perfectly balanced model (uniform 1/K).

    The null distribution of MAD is computed exactly where that is cheap — the binomial for K = 2, full
    enumeration of the C(n+K−1, K−1) multinomial outcomes when there are at most `max_enumeration` — and
    otherwise by `draws` Monte-Carlo samples with a fixed `seed` (p = (1 + #≥)/(1 + draws)).
    `excess` = MAD − E_null[MAD] is the part of the score that is not sampling noise.
    """
    counts = as_counts(counts)
    n, k = int(counts.sum()), counts.size
    if k < 2:
        raise CrayonboxError("MAD needs at least two categories")
    observed = mad_score(counts)
    tol = 1e-12  # MAD values are rationals; equal outcomes must compare as equal despite float rounding.
    if k == 2:
        x = np.arange(n + 1)
        null_mads = np.abs(x / n - 0.5)
        p_value = float(stats.binom.pmf(x, n, 0.5)[null_mads >= observed - tol].sum())
        method, used_draws = "exact-binomial", 0
    elif math.comb(n + k - 1, k - 1) <= max_enumeration:
        outcomes = _compositions(n, k)
        log_pmf = gammaln(n + 1) - gammaln(outcomes + 1).sum(axis=1) - n * np.log(k)
        p_value = float(np.exp(log_pmf[_mad_rows(outcomes) >= observed - tol]).sum())
        method, used_draws = "exact-enumeration", 0
    else:
        if draws < 1:
            raise CrayonboxError(f"draws must be at least 1, got {draws}")
        sims = np.random.default_rng(seed).multinomial(n, np.full(k, 1.0 / k), size=draws)
        p_value = (1 + int((_mad_rows(sims) >= observed - tol).sum())) / (1 + draws)
        method, used_draws = "monte-carlo", draws
    null_mean = mad_noise_floor(n, k)
    return MADResult(n=n, k=k, mad=observed, null_mean=null_mean, excess=observed - null_mean,
                     p_value=min(p_value, 1.0), method=method, draws=used_draws)


def _compositions(n: int, k: int) -> np.ndarray:
    """Every way to put n images into k categories, as a (C(n+k−1, k−1), k) count matrix (stars and bars)."""
    bars = np.array(list(itertools.combinations(range(n + k - 1), k - 1)), dtype=np.int64)
    edges = np.hstack([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + k - 1)])
    return np.diff(edges, axis=1) - 1
