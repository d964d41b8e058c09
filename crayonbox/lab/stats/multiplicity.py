"""Many tests at once (prompts × attributes × models): Benjamini–Hochberg false-discovery-rate control."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from statsmodels.stats.multitest import multipletests

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import StatsResult


@dataclass(frozen=True)
class FDRResult(StatsResult):
    """BH-adjusted p-values (q-values) and which hypotheses are rejected at the FDR level `alpha`."""

    labels: list[str]
    p_values: np.ndarray
    adjusted: np.ndarray
    rejected: np.ndarray
    alpha: float

    @property
    def discoveries(self) -> list[str]:
        """Labels of the rejected hypotheses, in input order."""
        return [label for label, r in zip(self.labels, self.rejected, strict=True) if r]


def benjamini_hochberg(p_values: ArrayLike, alpha: float = 0.05,
                       labels: Sequence[str] | None = None) -> FDRResult:
    """Benjamini–Hochberg step-up procedure.

    Sort p-values p₍₁₎ ≤ … ≤ p₍ₘ₎; the adjusted value of p₍ᵢ₎ is min_{j ≥ i} min(1, m·p₍ⱼ₎/j), and a
    hypothesis is rejected when its adjusted value ≤ α. Controls the expected share of false discoveries
    at α for independent or positively dependent tests — the right tool when a report flags "biased" cells
    out of hundreds of prompt × attribute tests. Computed by statsmodels
    `multipletests(method="fdr_bh")`.
    `labels` (e.g. "a person / gender") are carried through so the report can name the discoveries.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise CrayonboxError("p_values must be a non-empty 1-D list")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise CrayonboxError("p-values must all be numbers between 0 and 1 (a NaN means a test failed "
                             "upstream)")
    if not 0.0 < alpha < 1.0:
        raise CrayonboxError(f"alpha must be between 0 and 1, got {alpha}")
    names = [str(i) for i in range(p.size)] if labels is None else [str(label) for label in labels]
    if len(names) != p.size:
        raise CrayonboxError(f"got {len(names)} labels for {p.size} p-values")
    rejected, adjusted, _, _ = multipletests(p, alpha=alpha, method="fdr_bh")
    return FDRResult(labels=names, p_values=p, adjusted=adjusted, rejected=rejected, alpha=alpha)
