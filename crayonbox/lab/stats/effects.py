"""Effect sizes and clustering: Cohen's h between two proportions, and the intra-class correlation of
images within prompts with the design effect it implies for family-level claims."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import StatsResult


def cohens_h(p1: float, p2: float) -> float:
    """h = 2·asin√p₁ − 2·asin√p₂: a difference of proportions on the variance-stabilised scale, so 0.1 vs 0.2
    and 0.5 vs 0.6 are compared fairly. Conventional sizes: 0.2 small, 0.5 medium, 0.8 large. Use it to
    compare one attribute between two prompts or two models."""
    for p in (p1, p2):
        if not 0.0 <= p <= 1.0:
            raise CrayonboxError(f"proportions must be between 0 and 1, got {p}")
    return float(2.0 * np.arcsin(np.sqrt(p1)) - 2.0 * np.arcsin(np.sqrt(p2)))


def design_effect(cluster_size: float, icc: float) -> float:
    """deff = 1 + (m − 1)ρ: how much clustering (m images per prompt, intra-class correlation ρ) inflates the
    variance of a family-level share; the effective sample size is n / deff. m=9, ρ=0.1 → 1.8."""
    if cluster_size < 1:
        raise CrayonboxError(f"cluster size must be at least 1, got {cluster_size}")
    return 1.0 + (cluster_size - 1.0) * icc


@dataclass(frozen=True)
class ICCResult(StatsResult):
    """One-way ANOVA intra-class correlation of a binary attribute across prompts."""

    groups: int
    n: int
    share: float
    msb: float
    msw: float
    m0: float
    icc: float
    cluster_size: float
    design_effect: float
    effective_n: float


def icc_anova(successes: ArrayLike, totals: ArrayLike) -> ICCResult:
    """ANOVA estimator of the ICC ρ from per-prompt counts (y_i of m_i images show the attribute).

    MSB = Σ m_i (p_i − p̄)² / (g − 1), MSW = Σ m_i p_i (1 − p_i) / (N − g),
    m₀ = (N − Σm_i²/N) / (g − 1), ρ̂ = (MSB − MSW) / (MSB + (m₀ − 1) MSW).
    ρ̂ can be slightly negative by chance; the design effect uses max(ρ̂, 0) and the size-weighted cluster
    size m̃ = Σm_i²/N (= m when all prompts have m images). A large ρ means prompts differ a lot: add prompts
    rather than images per prompt to tighten a family-level estimate.
    """
    y = np.asarray(successes, dtype=float)
    m = np.asarray(totals, dtype=float)
    if y.ndim != 1 or y.shape != m.shape or y.size < 2:
        raise CrayonboxError("need matching per-prompt successes and totals for at least two prompts")
    if np.any(m < 1) or np.any(y < 0) or np.any(y > m):
        raise CrayonboxError("each prompt needs ≥ 1 image and 0 ≤ successes ≤ its total")
    g, n = y.size, m.sum()
    if n <= g:
        raise CrayonboxError("need more than one image per prompt on average to separate within-prompt noise")
    p_i, p_bar = y / m, y.sum() / n
    msb = float((m * (p_i - p_bar) ** 2).sum() / (g - 1))
    msw = float((m * p_i * (1.0 - p_i)).sum() / (n - g))
    m0 = float((n - (m**2).sum() / n) / (g - 1))
    denom = msb + (m0 - 1.0) * msw
    icc = (msb - msw) / denom if denom > 0 else 0.0
    cluster = float((m**2).sum() / n)
    deff = design_effect(cluster, max(icc, 0.0))
    return ICCResult(groups=g, n=int(n), share=float(p_bar), msb=msb, msw=msw, m0=m0, icc=float(icc),
                     cluster_size=cluster, design_effect=deff, effective_n=float(n / deff))
