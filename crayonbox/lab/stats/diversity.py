"""Diversity of what a prompt produces: Shannon entropy (plug-in and Miller–Madow), its normalised form,
the effective number of categories, and a bootstrap interval. Natural logs (nats)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import entr

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import StatsResult, as_counts, check_confidence


def plugin_entropy(counts: ArrayLike) -> float:
    """Ĥ = −Σ p̂_k ln p̂_k. Biased low: at n images it misses about (K−1)/(2n) nats."""
    counts = as_counts(counts)
    return float(entr(counts / counts.sum()).sum())


def miller_madow_entropy(counts: ArrayLike) -> float:
    """Ĥ_MM = Ĥ + (K̂−1)/(2n), K̂ = categories actually observed (Miller 1955). Removes the first-order bias
    of the plug-in estimate; use it whenever comparing prompts or models with different n."""
    counts = as_counts(counts)
    observed_k = int((counts > 0).sum())
    return plugin_entropy(counts) + (observed_k - 1) / (2.0 * counts.sum())


def _miller_madow_rows(samples: np.ndarray) -> np.ndarray:
    """Miller–Madow entropy of every row of a (draws, K) count matrix."""
    n = samples.sum(axis=1)
    plug = entr(samples / n[:, None]).sum(axis=1)
    return plug + ((samples > 0).sum(axis=1) - 1) / (2.0 * n)


@dataclass(frozen=True)
class EntropyResult(StatsResult):
    """Entropy summaries; the interval is a percentile bootstrap of Ĥ_MM, mapped through the monotone
    transforms for the normalised entropy and the effective number."""

    n: int
    k: int
    observed_k: int
    plugin: float
    miller_madow: float
    normalized: float
    effective_number: float
    low: float
    high: float
    effective_number_low: float
    effective_number_high: float
    confidence: float
    draws: int


def entropy_summary(counts: ArrayLike, confidence: float = 0.95, draws: int = 2000,
                    seed: int = 0) -> EntropyResult:
    """Entropy of a count vector with a bootstrap interval.

    normalized = Ĥ_MM / ln K (1 = perfectly even over all K categories, incl. ones never seen);
    effective_number = exp(Ĥ_MM), "as diverse as this many equally common categories". Because Ĥ_MM adds
    the bias correction, a near-even sample can score slightly above 1 (or K); that is the estimator being
    unbiased, not an error.
    The bootstrap resamples n images from p̂ (`draws` times, fixed `seed`). Categories never observed can't
    appear in a resample, so for very peaked outputs the interval understates how high H could be.
    """
    counts = as_counts(counts)
    check_confidence(confidence)
    if draws < 10:
        raise CrayonboxError(f"draws must be at least 10 for a bootstrap interval, got {draws}")
    n, k = int(counts.sum()), counts.size
    h_mm = miller_madow_entropy(counts)
    rng = np.random.default_rng(seed)
    boot = _miller_madow_rows(rng.multinomial(n, counts / n, size=draws))
    tail = (1.0 - confidence) / 2.0
    low, high = (float(v) for v in np.quantile(boot, [tail, 1.0 - tail]))
    return EntropyResult(n=n, k=k, observed_k=int((counts > 0).sum()), plugin=plugin_entropy(counts),
                         miller_madow=h_mm, normalized=h_mm / np.log(k) if k > 1 else float("nan"),
                         effective_number=float(np.exp(h_mm)), low=low, high=high,
                         effective_number_low=float(np.exp(low)), effective_number_high=float(np.exp(high)),
                         confidence=confidence, draws=draws)
