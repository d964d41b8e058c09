"""Distances between the sample's distribution and a reference (TV, Jensen–Shannon, KL) and goodness-of-fit
tests (G-test, Pearson χ², Monte-Carlo). All logs are natural: KL and JS are in nats (JS ≤ ln 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import rel_entr, xlogy

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import Reference, StatsResult, as_counts, as_reference

STATISTICS = ("g", "pearson")


def total_variation(p: ArrayLike, q: ArrayLike) -> float:
    """TV = ½ Σ|p_k − q_k|: the largest difference in probability any event can have (0 … 1)."""
    return float(0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum())


def kl_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """KL(p‖q) = Σ p_k ln(p_k/q_k) in nats; inf when some q_k = 0 < p_k.

    Bias note: with p = p̂ from n draws, E[KL(p̂‖q)] ≈ (K−1)/(2n) even when the model matches q exactly,
    so a small KL at small n is noise; `distance_to_reference` reports that bias next to it.
    """
    return float(rel_entr(np.asarray(p, float), np.asarray(q, float)).sum())


def jensen_shannon(p: ArrayLike, q: ArrayLike) -> float:
    """JS(p, q) = ½ KL(p‖m) + ½ KL(q‖m), m = (p+q)/2, in nats. Bounded by ln 2 and finite with zero counts,
    which makes it the safer distance when either side has empty categories."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = (p + q) / 2.0
    return float(0.5 * rel_entr(p, m).sum() + 0.5 * rel_entr(q, m).sum())


@dataclass(frozen=True)
class GoodnessOfFitResult(StatsResult):
    """A test statistic with its degrees of freedom and p-value."""

    statistic: float
    df: int
    p_value: float
    method: str
    draws: int = 0


def _statistic(observed: np.ndarray, expected: np.ndarray, kind: str) -> np.ndarray:
    """G = 2 Σ O ln(O/E) or X² = Σ (O−E)²/E over the last axis (cells with E = 0 must have been dropped)."""
    if kind == "g":
        return 2.0 * (xlogy(observed, observed) - xlogy(observed, expected)).sum(axis=-1)
    return ((observed - expected) ** 2 / expected).sum(axis=-1)


def _observed_expected(counts: np.ndarray, ref: Reference) -> tuple[np.ndarray, np.ndarray, int]:
    """Observed and null-expected cells, flattened; and the degrees of freedom.

    Fixed q: one-sample test, E = n q, df = K−1. Estimated q: the two-sample test of homogeneity on the
    2 × K table (sample, reference), E from the pooled margins, df = K−1. Categories empty on both sides
    carry no information and are dropped (and so don't count in df).
    """
    if ref.estimated:
        table = np.vstack([counts, ref.counts]).astype(float)
        table = table[:, table.sum(axis=0) > 0]
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
        return table.ravel(), expected.ravel(), table.shape[1] - 1
    keep = (ref.q > 0) | (counts > 0)
    return counts[keep].astype(float), counts.sum() * ref.q[keep], int((ref.q > 0).sum()) - 1


def _check_df(df: int) -> None:
    if df < 1:
        raise CrayonboxError("the test needs at least two categories with any counts or reference mass")


def g_test(counts: ArrayLike, reference: Reference | ArrayLike) -> GoodnessOfFitResult:
    """Likelihood-ratio (G) test that the sample follows the reference: G = 2n·KL(p̂‖q) ~ χ²_{K−1}.

    With an estimated reference this is the 2 × K test of homogeneity. Trust the χ² p-value when expected
    counts are ≳ 5; otherwise use `monte_carlo_test`. A count where q_k = 0 gives G = inf, p = 0.
    """
    counts = as_counts(counts)
    observed, expected, df = _observed_expected(counts, as_reference(reference, counts.size))
    _check_df(df)
    if np.any((expected == 0) & (observed > 0)):
        return GoodnessOfFitResult(statistic=float("inf"), df=df, p_value=0.0, method="g-test")
    g = float(_statistic(observed, expected, "g"))
    return GoodnessOfFitResult(statistic=g, df=df, p_value=float(stats.chi2.sf(g, df)), method="g-test")


def pearson_test(counts: ArrayLike, reference: Reference | ArrayLike) -> GoodnessOfFitResult:
    """Pearson χ² test: X² = Σ (O−E)²/E ~ χ²_{K−1}; same conditions as `g_test`, closer to χ² at small n."""
    counts = as_counts(counts)
    observed, expected, df = _observed_expected(counts, as_reference(reference, counts.size))
    _check_df(df)
    if np.any((expected == 0) & (observed > 0)):
        return GoodnessOfFitResult(statistic=float("inf"), df=df, p_value=0.0, method="pearson")
    x2 = float(_statistic(observed, expected, "pearson"))
    return GoodnessOfFitResult(statistic=x2, df=df, p_value=float(stats.chi2.sf(x2, df)), method="pearson")


def monte_carlo_test(counts: ArrayLike, reference: Reference | ArrayLike, statistic: str = "g",
                     draws: int = 10_000, seed: int = 0) -> GoodnessOfFitResult:
    """Monte-Carlo exact test for small counts: simulate the statistic under the null and report
    p = (1 + #{T* ≥ T}) / (1 + draws), which never returns an impossible 0.

    Fixed q: T* from Multinomial(n, q). Estimated q: 2 × K tables with both margins fixed (the
    conditional, Fisher-style null), drawn with scipy's `random_table`. Deterministic for a given seed.
    """
    if statistic not in STATISTICS:
        raise CrayonboxError(f"unknown statistic {statistic!r}; choose one of {STATISTICS}")
    if draws < 1:
        raise CrayonboxError(f"draws must be at least 1, got {draws}")
    counts = as_counts(counts)
    ref = as_reference(reference, counts.size)
    observed, expected, df = _observed_expected(counts, ref)
    _check_df(df)
    rng = np.random.default_rng(seed)
    if np.any((expected == 0) & (observed > 0)):
        return GoodnessOfFitResult(statistic=float("inf"), df=df, p_value=1.0 / (1 + draws),
                          method=f"monte-carlo-{statistic}", draws=draws)
    # After the check above every cell left has E > 0, in the same order as the simulated cells below.
    t_obs = float(_statistic(observed, expected, statistic))
    if ref.estimated:
        table = observed.reshape(2, -1)
        sims = stats.random_table(table.sum(axis=1), table.sum(axis=0), seed=rng).rvs(draws)
        sims = sims.reshape(draws, -1)
    else:
        sims = rng.multinomial(int(counts.sum()), ref.q[ref.q > 0], size=draws)
    t_sim = _statistic(sims.astype(float), expected, statistic)
    # Ties are common with discrete data; count near-equal statistics as "at least as extreme".
    extreme = int((t_sim >= t_obs - 1e-9 * max(1.0, abs(t_obs))).sum())
    return GoodnessOfFitResult(statistic=t_obs, df=df, p_value=(1 + extreme) / (1 + draws),
                      method=f"monte-carlo-{statistic}", draws=draws)


@dataclass(frozen=True)
class DistanceResult(StatsResult):
    """All distances of a sample from its reference, with the KL noise level and the tests."""

    n: int
    reference_n: int | None
    total_variation: float
    jensen_shannon: float
    kl: float
    kl_null_bias: float
    g_test: GoodnessOfFitResult
    pearson: GoodnessOfFitResult
    monte_carlo: GoodnessOfFitResult | None


def distance_to_reference(counts: ArrayLike, reference: Reference | ArrayLike, monte_carlo_draws: int = 0,
                          seed: int = 0) -> DistanceResult:
    """TV, JS and KL(p̂‖q) with G and Pearson tests, plus a Monte-Carlo G-test if `monte_carlo_draws` > 0.

    `kl_null_bias` = (K−1)/(2n) (+ (K−1)/(2m) when q was estimated from m images) is what KL averages when
    the model matches the reference exactly: read KL against it, and use the tests for significance.
    """
    counts = as_counts(counts)
    ref = as_reference(reference, counts.size)
    n = int(counts.sum())
    p = counts / n
    k_live = int(((ref.q > 0) | (p > 0)).sum())
    bias = (k_live - 1) / (2.0 * n) + ((k_live - 1) / (2.0 * ref.n) if ref.estimated else 0.0)
    mc = monte_carlo_test(counts, ref, "g", monte_carlo_draws, seed) if monte_carlo_draws > 0 else None
    return DistanceResult(n=n, reference_n=ref.n, total_variation=total_variation(p, ref.q),
                          jensen_shannon=jensen_shannon(p, ref.q), kl=kl_divergence(p, ref.q),
                          kl_null_bias=bias, g_test=g_test(counts, ref), pearson=pearson_test(counts, ref),
                          monte_carlo=mc)
