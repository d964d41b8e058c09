"""How many images to generate: sample sizes for a target interval width, for detecting a difference, for a
goodness-of-fit test, and for seeing a rare mode at least once."""

from __future__ import annotations

import math

from scipy import stats

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.core import check_confidence


def _check_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise CrayonboxError(f"{name} must be strictly between 0 and 1, got {value}")


def n_for_half_width(half_width: float, p: float = 0.5, confidence: float = 0.95, categories: int = 1) -> int:
    """n = ⌈z² p(1−p) / E²⌉ so that a normal-approximation interval for p has half-width E.

    p = 0.5 is the worst case (97 for ±0.10, 385 for ±0.05). With `categories` = K > 1 the z is Bonferroni's
    z_{1−α/(2K)}, so all K shares are within ±E at once (K = 10 Monk bins at ±0.05: 788).
    """
    _check_probability("half_width", half_width)
    _check_probability("p", p)
    check_confidence(confidence)
    if categories < 1:
        raise CrayonboxError(f"categories must be at least 1, got {categories}")
    z = stats.norm.isf((1.0 - confidence) / (2.0 * categories))
    return math.ceil(z * z * p * (1.0 - p) / half_width**2)


def n_per_arm_two_proportions(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Images per arm to detect p₁ ≠ p₂ with a two-sided test (pooled-variance normal approximation):
    n = ⌈(z_{1−α/2}·sqrt(2p̄(1−p̄)) + z_{power}·sqrt(p₁(1−p₁) + p₂(1−p₂)))² / (p₁ − p₂)²⌉. 0.5 vs 0.6 → 388."""
    for name, value in (("p1", p1), ("p2", p2), ("alpha", alpha), ("power", power)):
        _check_probability(name, value)
    if p1 == p2:
        raise CrayonboxError("p1 and p2 are equal: no sample size detects a zero difference")
    p_bar = (p1 + p2) / 2.0
    z_a, z_b = stats.norm.isf(alpha / 2.0), stats.norm.ppf(power)
    root = z_a * math.sqrt(2.0 * p_bar * (1.0 - p_bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root**2 / (p1 - p2) ** 2)


def n_for_goodness_of_fit(effect_w: float, categories: int, alpha: float = 0.05, power: float = 0.8) -> int:
    """Smallest n at which a χ² goodness-of-fit test over K categories has the given power against an
    effect of Cohen's w = sqrt(Σ (p_k − q_k)²/q_k): the statistic is then noncentral χ²_{K−1}(n w²).
    w = 0.1: 785 for K = 2 and 1,565 for K = 10."""
    if effect_w <= 0:
        raise CrayonboxError(f"effect size w must be > 0, got {effect_w}")
    if categories < 2:
        raise CrayonboxError(f"need at least 2 categories, got {categories}")
    _check_probability("alpha", alpha)
    _check_probability("power", power)
    if power <= alpha:
        raise CrayonboxError(f"power ({power}) must exceed alpha ({alpha}); any n achieves power alpha")
    df = categories - 1
    critical = stats.chi2.isf(alpha, df)

    def achieved(n: int) -> float:
        return float(stats.ncx2.sf(critical, df, n * effect_w**2))

    high = 1
    while achieved(high) < power:
        high *= 2
    # achieved(low) < power ≤ achieved(high) (at n = 0 the power is alpha); power grows with n, so bisect.
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if achieved(mid) < power else (low, mid)
    return high


def n_to_see_rare_mode(prevalence: float, probability: float = 0.95) -> int:
    """n ≥ ln(1 − probability) / ln(1 − π) images to see a mode of prevalence π at least once:
    59 for π = 5 %, 299 for 1 %, 2,995 for 0.1 %. (Conversely 0 seen in n gives a 95 % upper bound ≈ 3/n.)"""
    _check_probability("prevalence", prevalence)
    _check_probability("probability", probability)
    return math.ceil(math.log(1.0 - probability) / math.log(1.0 - prevalence))
