"""The ablation's paired effect across training seeds: coverage of the planted effect, and its parts."""

import numpy as np
import pytest

from crayonbox.errors import CrayonboxError
from crayonbox.lab.stats.seed_effects import SeedCounts, pooled_training_noise, seed_effect


def _simulate(rng, arms: dict[str, float], tau: float, seeds: int, n: int) -> dict[str, list[SeedCounts]]:
    """Each model's true share is the arm's share plus N(0, τ²) training noise; n images are drawn from it."""
    out = {}
    for arm, share in arms.items():
        out[arm] = [SeedCounts(s, int(rng.binomial(n, np.clip(share + rng.normal(0, tau), 0.01, 0.99))), n)
                    for s in range(seeds)]
    return out


@pytest.mark.parametrize("tau", [0.0, 0.04])
def test_interval_covers_the_planted_effect(tau):
    rng = np.random.default_rng(1)
    arms = {"baseline": 0.85, "english_only:drop": 0.21, "min_length:off": 0.85, "dropout:off": 0.80}
    covered = {a: 0 for a in arms if a != "baseline"}
    sims = 400
    for _ in range(sims):
        data = _simulate(rng, arms, tau, seeds=2, n=300)
        noise = pooled_training_noise(data)
        assert noise.df == 4
        for arm in covered:
            e = seed_effect(data[arm], data["baseline"], noise)
            covered[arm] += e.interval[0] <= arms[arm] - arms["baseline"] <= e.interval[1]
    for arm, hits in covered.items():
        # t with 4 pooled df over 2 seeds: about nominal coverage, or conservative (never below ~93 % here)
        assert hits / sims >= 0.925, (arm, hits / sims)


def test_training_noise_widens_the_interval_and_large_effects_stay_significant():
    rng = np.random.default_rng(2)
    arms = {"baseline": 0.85, "english_only:drop": 0.21}
    quiet = _simulate(rng, arms, 0.0, 2, 300)
    noisy = _simulate(rng, arms, 0.08, 2, 300)
    e_quiet = seed_effect(quiet["english_only:drop"], quiet["baseline"], pooled_training_noise(quiet))
    e_noisy = seed_effect(noisy["english_only:drop"], noisy["baseline"], pooled_training_noise(noisy))
    assert e_quiet.significant and e_quiet.effect == pytest.approx(-0.64, abs=0.06)
    assert e_noisy.standard_error > e_quiet.standard_error


def test_no_effect_is_not_significant_and_one_seed_falls_back_to_sampling_noise():
    base = [SeedCounts(0, 150, 300)]
    arm = [SeedCounts(0, 156, 300)]
    noise = pooled_training_noise({"baseline": base, "arm": arm})
    assert noise.df == 0 and noise.tau2 == 0
    e = seed_effect(arm, base, noise)
    assert not e.significant
    sampling = np.sqrt(0.5 * 0.5 / 300 + 0.52 * 0.48 / 300)
    assert e.standard_error == pytest.approx(sampling, rel=1e-6)


def test_unpaired_seeds_are_an_error():
    with pytest.raises(CrayonboxError, match="no training seed"):
        seed_effect([SeedCounts(5, 1, 10)], [SeedCounts(0, 1, 10)], pooled_training_noise({}))
