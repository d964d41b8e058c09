"""Tests for crayonbox.lab.stats: against scipy/statsmodels where they implement the same thing, against the
[RAN] numbers of, and simulations with fixed seeds for the rest."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    multinomial_proportions_confint,
    proportion_confint,
    proportion_effectsize,
)

from crayonbox.errors import CrayonboxError
from crayonbox.lab import stats as lab

# ---------------------------------------------------------------- single proportions


@pytest.mark.parametrize("x,n", [(0, 1), (0, 9), (3, 9), (8, 9), (9, 9), (17, 400), (4500, 5000)])
def test_wilson_and_clopper_pearson_match_statsmodels(x, n):
    for confidence in (0.9, 0.95, 0.99):
        w = lab.wilson_interval(x, n, confidence)
        cp = lab.clopper_pearson_interval(x, n, confidence)
        np.testing.assert_allclose([w.low, w.high], proportion_confint(x, n, 1 - confidence, "wilson"),
                                   atol=1e-12)
        np.testing.assert_allclose([cp.low, cp.high], proportion_confint(x, n, 1 - confidence, "beta"),
                                   atol=1e-12)


def test_wilson_reproduces_the_reference_anecdote_numbers():
    big, grid = lab.wilson_interval(4500, 5000), lab.wilson_interval(8, 9)
    assert (round(big.low, 3), round(big.high, 3)) == (0.891, 0.908)
    assert (round(grid.low, 3), round(grid.high, 3)) == (0.565, 0.980)


def test_intervals_contain_estimate_and_shrink_with_n():
    widths = []
    for n in (10, 100, 1000, 10000):
        for interval in (lab.wilson_interval(3 * n // 10, n), lab.clopper_pearson_interval(3 * n // 10, n)):
            assert interval.low <= interval.estimate <= interval.high
        widths.append(lab.wilson_interval(3 * n // 10, n).half_width)
    assert all(a > b for a, b in itertools.pairwise(widths))
    zero = lab.clopper_pearson_interval(0, 300)
    assert zero.low == 0.0 and zero.high == pytest.approx(1 - 0.025 ** (1 / 300))  # ≈ 3.7/n two-sided


def test_single_proportion_bad_input_is_a_clear_error():
    with pytest.raises(CrayonboxError, match="count between 0 and n"):
        lab.wilson_interval(10, 9)
    with pytest.raises(CrayonboxError, match="confidence"):
        lab.wilson_interval(1, 9, confidence=95)


# ---------------------------------------------------------------- simultaneous intervals

COUNTS_10 = [5, 12, 30, 8, 2, 0, 9, 14, 6, 3]
COUNTS_7 = [56, 72, 73, 59, 62, 87, 58]


@pytest.mark.parametrize("method", ["goodman", "sison-glaz"])
@pytest.mark.parametrize("counts", [COUNTS_10, COUNTS_7, [40, 60]])
def test_simultaneous_intervals_match_statsmodels(method, counts):
    ours = lab.simultaneous_intervals(counts, 0.95, method)
    ref = multinomial_proportions_confint(counts, 0.05, method)
    np.testing.assert_allclose(ours.low, ref[:, 0], atol=1e-12)
    np.testing.assert_allclose(ours.high, ref[:, 1], atol=1e-12)


def test_bonferroni_wilson_is_wilson_at_the_bonferroni_level():
    ours = lab.simultaneous_intervals(COUNTS_10, 0.95, "bonferroni-wilson")
    for k, count in enumerate(COUNTS_10):
        single = lab.wilson_interval(count, sum(COUNTS_10), 1 - 0.05 / 10)
        assert ours.low[k] == pytest.approx(single.low) and ours.high[k] == pytest.approx(single.high)


@pytest.mark.parametrize("method", ["goodman", "bonferroni-wilson"])
def test_simultaneous_intervals_cover_jointly(method):
    p = np.array([0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05])
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):
        r = lab.simultaneous_intervals(rng.multinomial(300, p), 0.95, method)
        assert np.all((r.low <= r.estimate) & (r.estimate <= r.high))
        hits += bool(np.all((r.low <= p) & (p <= r.high)))
    assert hits / 400 >= 0.94  # joint coverage of all 7 at once, not just each


def test_simultaneous_intervals_are_wider_than_marginal_ones():
    joint = lab.simultaneous_intervals(COUNTS_7, 0.95, "goodman")
    marginal = lab.wilson_interval(COUNTS_7[0], sum(COUNTS_7))
    assert joint.high[0] - joint.low[0] > marginal.high - marginal.low
    with pytest.raises(CrayonboxError, match="unknown simultaneous-interval method"):
        lab.simultaneous_intervals(COUNTS_7, method="exact")


# ---------------------------------------------------------------- gaps and ratios against a reference


def test_gaps_against_an_estimated_reference_match_statsmodels_newcombe_and_log_ratio():
    counts, ref_counts = np.array([30, 55, 15]), np.array([400, 450, 150])
    g = lab.reference_gaps(counts, lab.Reference.from_counts(ref_counts))
    for k in range(3):
        args = (counts[k], 100, ref_counts[k], 1000)
        diff = confint_proportions_2indep(*args, method="newcomb", compare="diff")
        ratio = confint_proportions_2indep(*args, method="log", compare="ratio")
        np.testing.assert_allclose([g.gap_low[k], g.gap_high[k]], diff, atol=1e-12)
        np.testing.assert_allclose([g.ratio_low[k], g.ratio_high[k]], ratio, atol=1e-12)
    np.testing.assert_allclose(g.gap, counts / 100 - ref_counts / 1000)


def test_estimating_the_reference_adds_its_variance():
    counts, q = [30, 70], [0.4, 0.6]
    fixed = lab.reference_gaps(counts, q)
    measured = lab.reference_gaps(counts, lab.Reference.from_counts([40, 60]))
    np.testing.assert_allclose(fixed.gap_se, np.sqrt(0.3 * 0.7 / 100))
    np.testing.assert_allclose(measured.gap_se, np.sqrt(0.3 * 0.7 / 100 + 0.4 * 0.6 / 100))
    assert np.all(measured.gap_high - measured.gap_low > fixed.gap_high - fixed.gap_low)
    # With q known the gap interval is the Wilson interval shifted by −q.
    w = lab.wilson_interval(30, 100)
    assert (fixed.gap_low[0], fixed.gap_high[0]) == pytest.approx((w.low - 0.4, w.high - 0.4))
    np.testing.assert_allclose(fixed.log_ratio_se[0], math.sqrt(1 / 30 - 1 / 100))


def test_gap_edge_cases():
    marginal = lab.reference_gaps([0, 50], [0.2, 0.8])
    assert marginal.ratio[0] == 0.0 and 0 < marginal.ratio_low[0] < marginal.ratio_high[0] < 1  # Haldane 0.5
    g = lab.reference_gaps([0, 50], [0.2, 0.8], simultaneous=True)
    assert g.gap_high[0] < 0  # 0/50 against 20 % is a real shortfall even read jointly
    assert g.gap_high[1] - g.gap_low[1] > marginal.gap_high[1] - marginal.gap_low[1]
    with pytest.raises(CrayonboxError, match="same instrument"):
        lab.reference_gaps([1, 2, 3], [0.5, 0.5])
    with pytest.raises(CrayonboxError, match="sum to 1"):
        lab.reference_gaps([1, 2], [40, 60])


# ---------------------------------------------------------------- distances and tests


def test_distances_match_scipy_and_hand_values():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert lab.total_variation(p, q) == pytest.approx(0.4)
    assert lab.kl_divergence(p, q) == pytest.approx(stats.entropy(p, q))
    assert lab.jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q) ** 2)
    assert lab.kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert lab.jensen_shannon([1.0, 0.0], [0.0, 1.0]) == pytest.approx(math.log(2))


def test_one_sample_tests_match_scipy():
    counts, q = np.array([18, 25, 7, 10]), np.array([0.25, 0.35, 0.2, 0.2])
    expected = counts.sum() * q
    g, x2 = lab.g_test(counts, q), lab.pearson_test(counts, q)
    ref_g = stats.power_divergence(counts, expected, lambda_="log-likelihood")
    ref_x2 = stats.chisquare(counts, expected)
    assert (g.statistic, g.p_value, g.df) == pytest.approx((ref_g.statistic, ref_g.pvalue, 3))
    assert (x2.statistic, x2.p_value) == pytest.approx((ref_x2.statistic, ref_x2.pvalue))
    assert g.statistic == pytest.approx(2 * counts.sum() * lab.kl_divergence(counts / 60, q))


def test_two_sample_tests_match_scipy_contingency():
    counts, ref_counts = [18, 25, 7, 0], [150, 420, 230, 0]
    ref = lab.Reference.from_counts(ref_counts)
    table = np.array([counts[:3], ref_counts[:3]])
    g_ref = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    x2_ref = stats.chi2_contingency(table, correction=False)
    g, x2 = lab.g_test(counts, ref), lab.pearson_test(counts, ref)
    assert (g.statistic, g.p_value, g.df) == pytest.approx((g_ref.statistic, g_ref.pvalue, 2))
    assert (x2.statistic, x2.p_value) == pytest.approx((x2_ref.statistic, x2_ref.pvalue))


def test_monte_carlo_test_matches_exact_enumeration_for_small_counts():
    counts, q = np.array([10, 5, 3]), np.array([0.3, 0.3, 0.4])
    n = counts.sum()

    def g_stat(c):
        c = np.asarray(c, float)
        return 2 * np.sum(np.where(c > 0, c * np.log(np.where(c > 0, c, 1) / (n * q)), 0.0))

    outcomes = [(a, b, n - a - b) for a in range(n + 1) for b in range(n + 1 - a)]
    exact = sum(stats.multinomial.pmf(c, n, q) for c in outcomes if g_stat(c) >= g_stat(counts) - 1e-9)
    mc = lab.monte_carlo_test(counts, q, "g", draws=20_000, seed=3)
    assert mc.p_value == pytest.approx(exact, abs=0.01)
    assert lab.monte_carlo_test(counts, q, draws=500, seed=3) == lab.monte_carlo_test(counts, q, "g", 500, 3)
    # Two-sample: with both margins fixed a 2×2 table is set by its first cell, which is hypergeometric.
    two = lab.monte_carlo_test([12, 3], lab.Reference.from_counts([30, 30]), "pearson", draws=20_000, seed=0)
    first = np.arange(16)  # margins: rows (15, 60), columns (42, 33)
    x2 = [stats.chi2_contingency([[a, 15 - a], [42 - a, 18 + a]], correction=False).statistic for a in first]
    observed_x2 = stats.chi2_contingency([[12, 3], [30, 30]], correction=False).statistic
    pmf = stats.hypergeom.pmf(first, 75, 42, 15)
    exact_two = pmf[np.array(x2) >= observed_x2 - 1e-9].sum()
    assert two.p_value == pytest.approx(exact_two, abs=0.01)


def test_kl_null_bias_is_what_kl_averages_when_the_model_matches():
    q, n = np.full(5, 0.2), 200
    rng = np.random.default_rng(0)
    kls = [lab.kl_divergence(c / n, q) for c in rng.multinomial(n, q, size=3000)]
    result = lab.distance_to_reference(rng.multinomial(n, q), q)
    assert result.kl_null_bias == pytest.approx(4 / 400)
    assert np.mean(kls) == pytest.approx(result.kl_null_bias, rel=0.1)


def test_distance_result_handles_impossible_categories():
    r = lab.distance_to_reference([10, 5, 3], [0.5, 0.5, 0.0], monte_carlo_draws=200)
    assert r.kl == math.inf and r.g_test.p_value == 0.0 and r.monte_carlo.p_value == 1 / 201
    encoded = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert encoded["kl"] is None and encoded["total_variation"] == pytest.approx(2 / 9)


# ---------------------------------------------------------------- entropy


def test_entropy_estimators():
    counts = [50, 30, 20, 0]
    assert lab.plugin_entropy(counts) == pytest.approx(stats.entropy([0.5, 0.3, 0.2]))
    assert lab.miller_madow_entropy(counts) == pytest.approx(stats.entropy([0.5, 0.3, 0.2]) + 2 / 200)
    s = lab.entropy_summary(counts, draws=1000, seed=0)
    assert s.normalized == pytest.approx(s.miller_madow / math.log(4))
    assert s.effective_number == pytest.approx(math.exp(s.miller_madow))
    assert s.low < s.miller_madow < s.high
    assert s.effective_number_low < s.effective_number < s.effective_number_high
    assert s == lab.entropy_summary(counts, draws=1000, seed=0)
    wide = lab.entropy_summary([5, 3, 2, 0], draws=1000, seed=0)
    assert wide.high - wide.low > s.high - s.low


def test_miller_madow_removes_most_of_the_plugin_bias():
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    truth = stats.entropy(p)
    samples = np.random.default_rng(5).multinomial(40, p, size=4000)
    plug = np.mean([lab.plugin_entropy(c) for c in samples])
    mm = np.mean([lab.miller_madow_entropy(c) for c in samples])
    assert plug < truth - 0.04 and abs(mm - truth) < abs(plug - truth) / 3


# ---------------------------------------------------------------- published-style MAD and its noise floor


@pytest.mark.parametrize("n,k,expected", [(8, 2, 0.137), (9, 2, 0.137), (50, 2, 0.056), (400, 2, 0.020),
                                          (8, 10, 0.086), (9, 10, 0.077), (50, 10, 0.033), (400, 10, 0.012)])
def test_mad_noise_floor_reproduces_reference(n, k, expected):
    assert round(lab.mad_noise_floor(n, k), 3) == expected


def test_noise_floor_equals_full_multinomial_enumeration_and_monte_carlo():
    n, k = 8, 5
    outcomes = [c for c in itertools.product(range(n + 1), repeat=k) if sum(c) == n]
    exact = sum(stats.multinomial.pmf(c, n, [1 / k] * k) * lab.mad_score(c) for c in outcomes)
    assert lab.mad_noise_floor(n, k) == pytest.approx(exact, abs=1e-12)
    sims = np.random.default_rng(0).multinomial(400, np.full(10, 0.1), size=4000)
    assert np.mean([lab.mad_score(c) for c in sims]) == pytest.approx(lab.mad_noise_floor(400, 10), rel=0.02)


def test_mad_score_and_p_values():
    assert lab.mad_score([7, 1]) == pytest.approx(abs(7 / 8 - 0.5))
    assert lab.mad_score([1, 1, 1, 1]) == 0.0
    gender = lab.mad_test([7, 1])
    assert gender.method == "exact-binomial" and gender.null_mean == pytest.approx(0.13671875)
    assert gender.p_value == pytest.approx(stats.binomtest(7, 8, 0.5).pvalue)
    assert lab.mad_test([4, 4]).p_value == pytest.approx(1.0)
    skin = [3, 1, 0, 0, 0, 4, 0, 0, 0, 0]
    exact, mc = lab.mad_test(skin), lab.mad_test(skin, draws=40_000, seed=1, max_enumeration=0)
    assert exact.method == "exact-enumeration" and mc.method == "monte-carlo"
    assert mc.p_value == pytest.approx(exact.p_value, abs=0.003)
    assert exact.excess == pytest.approx(exact.mad - lab.mad_noise_floor(8, 10))


# ---------------------------------------------------------------- instrument-error correction


def test_rogan_gladen_algebra_and_variance():
    se_, sp_, pi = 0.9, 0.85, 0.2
    observed = pi * se_ + (1 - pi) * (1 - sp_)  # = 0.3
    known = lab.rogan_gladen(300, 1000, se_, sp_)
    assert observed == pytest.approx(0.3) and known.estimate == pytest.approx(pi)
    assert known.se == pytest.approx(math.sqrt(0.3 * 0.7 / 1000) / (se_ + sp_ - 1))
    validated = lab.rogan_gladen(300, 1000, se_, sp_, sensitivity_n=200, specificity_n=200)
    var = 0.3 * 0.7 / 1000 + pi**2 * 0.9 * 0.1 / 200 + (1 - pi) ** 2 * 0.85 * 0.15 / 200
    assert validated.se == pytest.approx(math.sqrt(var) / 0.75)
    clipped = lab.rogan_gladen(100, 1000, se_, sp_)  # p̂ below the false-positive rate
    assert clipped.unclipped < 0 and clipped.estimate == 0.0 and clipped.low == 0.0
    with pytest.raises(CrayonboxError, match="no better than chance"):
        lab.rogan_gladen(300, 1000, 0.5, 0.5)


def test_rogan_gladen_interval_covers_in_simulation():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(300):
        x = rng.binomial(1000, 0.2 * 0.9 + 0.8 * 0.15)
        se_, sp_ = rng.binomial(200, 0.9) / 200, rng.binomial(200, 0.85) / 200
        r = lab.rogan_gladen(x, 1000, se_, sp_, 200, 200)
        hits += r.low <= 0.2 <= r.high
    assert hits / 300 >= 0.92


def test_project_to_simplex():
    np.testing.assert_allclose(lab.project_to_simplex([0.8, 0.5, -0.1]), [0.65, 0.35, 0.0])
    np.testing.assert_allclose(lab.project_to_simplex([0.2, 0.3, 0.5]), [0.2, 0.3, 0.5])
    rows = lab.project_to_simplex(np.random.default_rng(0).normal(size=(50, 4)))
    assert np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1)


def test_multiclass_correction_is_exact_on_noise_free_input_and_matches_rogan_gladen():
    confusion = np.array([[80, 20, 0], [10, 90, 0], [0, 0, 100]])
    pi = np.array([0.5, 0.3, 0.2])
    counts = np.round(1000 * (confusion / 100).T @ pi).astype(int)  # [430, 370, 200]
    corrected = lab.correct_for_confusion(counts, confusion, draws=50)
    np.testing.assert_allclose(corrected.estimate, pi, atol=1e-12)
    binary = lab.correct_for_confusion([700, 300], [[85, 15], [10, 90]], draws=50)  # classes (no, yes)
    assert binary.estimate[1] == pytest.approx(lab.rogan_gladen(300, 1000, 0.9, 0.85).estimate)


def test_multiclass_correction_recovers_a_planted_truth():
    rng = np.random.default_rng(2024)
    m = np.array([[0.85, 0.10, 0.05], [0.15, 0.80, 0.05], [0.10, 0.10, 0.80]])  # woman, man, no person
    pi = np.array([0.6, 0.3, 0.1])
    confusion = np.stack([rng.multinomial(300, row) for row in m])
    truth = rng.choice(3, size=3000, p=pi)
    labelled = np.array([rng.choice(3, p=m[t]) for t in truth])
    counts = np.bincount(labelled, minlength=3)
    r = lab.correct_for_confusion(counts, confusion, draws=1000, seed=0)
    assert np.all((r.low <= pi) & (pi <= r.high)), (r.low, r.high)
    assert np.all(np.abs(r.estimate - pi) < 0.04)
    naive = lab.simultaneous_intervals(counts)
    assert not np.all((naive.low <= pi) & (pi <= naive.high))  # uncorrected shares miss the truth


def test_correction_rejects_unusable_confusion():
    with pytest.raises(CrayonboxError, match="no validation items"):
        lab.correct_for_confusion([5, 5], [[10, 0], [0, 0]])
    with pytest.raises(CrayonboxError, match="singular"):
        lab.correct_for_confusion([5, 5], [[10, 10], [5, 5]])
    with pytest.raises(CrayonboxError, match="must be 3×3"):
        lab.correct_for_confusion([5, 5, 1], [[10, 1], [1, 10]])


# ---------------------------------------------------------------- multiplicity


def test_benjamini_hochberg_matches_statsmodels():
    p = np.concatenate([np.random.default_rng(7).uniform(size=40), [1e-5, 2e-4, 0.003, 0.01]])
    ours = lab.benjamini_hochberg(p, alpha=0.05)
    rejected, adjusted, _, _ = multipletests(p, alpha=0.05, method="fdr_bh")
    np.testing.assert_allclose(ours.adjusted, adjusted)
    np.testing.assert_array_equal(ours.rejected, rejected)
    named = lab.benjamini_hochberg([0.001, 0.2, 0.02], labels=["blank/gender", "blank/skin", "person/attire"])
    assert named.discoveries == ["blank/gender", "person/attire"]
    with pytest.raises(CrayonboxError, match="NaN"):
        lab.benjamini_hochberg([0.1, float("nan")])


# ---------------------------------------------------------------- guidance dose-response


def test_dose_response_two_scales_is_the_difference_of_empirical_logits():
    r = lab.dose_response([1, 4], [30, 70], [100, 100])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert r.slope == pytest.approx((logit(0.7) - logit(0.3)) / 2, rel=1e-6)
    assert r.slope_se == pytest.approx(math.sqrt(1 / 30 + 1 / 70 + 1 / 70 + 1 / 30) / 2, rel=1e-6)
    w = lab.wilson_interval(70, 100)
    assert (r.share_low[1], r.share_high[1]) == pytest.approx((w.low, w.high))


def test_dose_response_recovers_a_planted_slope():
    rng = np.random.default_rng(3)
    scales = np.array([1, 2, 3, 5, 10, 16], float)
    beta0, beta1 = -1.0, 0.8
    totals = np.full(scales.size, 300)
    successes = rng.binomial(totals, 1 / (1 + np.exp(-(beta0 + beta1 * np.log2(scales)))))
    r = lab.dose_response(scales, successes, totals)
    assert r.slope_low < beta1 < r.slope_high and r.slope_p < 1e-10
    assert r.odds_ratio == pytest.approx(math.exp(r.slope))
    flat = lab.dose_response([1, 3, 10], [50, 52, 49], [100, 100, 100])
    assert flat.slope_p > 0.5 and flat.slope_low < 0 < flat.slope_high


def test_overdispersed_prompts_widen_the_slope_interval():
    rng = np.random.default_rng(4)
    scales = np.repeat([1.0, 3.0, 10.0], 8)  # 8 prompts per scale whose base rates differ
    shares = 1 / (1 + np.exp(-(rng.normal(0, 1, scales.size) + 0.5 * np.log2(scales))))
    successes = rng.binomial(50, shares)
    plain = lab.dose_response(scales, successes, np.full(scales.size, 50))
    quasi = lab.dose_response(scales, successes, np.full(scales.size, 50), overdispersed=True)
    assert quasi.dispersion > 2 and quasi.slope == pytest.approx(plain.slope)
    assert quasi.slope_se == pytest.approx(plain.slope_se * math.sqrt(quasi.dispersion))
    assert list(plain.totals) == [400, 400, 400]
    with pytest.raises(CrayonboxError, match="two different condition scales"):
        lab.dose_response([3, 3], [1, 2], [5, 5])
    with pytest.raises(CrayonboxError, match="> 0"):
        lab.dose_response([0, 3], [1, 2], [5, 5])


# ---------------------------------------------------------------- effect sizes and clustering


def test_cohens_h_and_design_effect():
    for p1, p2 in [(0.9, 0.5), (0.1, 0.2), (0.5, 0.5)]:
        assert lab.cohens_h(p1, p2) == pytest.approx(proportion_effectsize(p1, p2))
    assert lab.design_effect(9, 0.1) == pytest.approx(1.8)
    assert lab.design_effect(9, 0.3) == pytest.approx(3.4)
    assert lab.design_effect(100, 0.1) == pytest.approx(10.9)


def test_icc_anova_matches_one_way_anova_and_recovers_a_planted_icc():
    y, m = np.array([2, 7, 5, 9, 1]), np.array([10, 10, 12, 10, 8])
    r = lab.icc_anova(y, m)
    groups = [np.r_[np.ones(a), np.zeros(b - a)] for a, b in zip(y, m, strict=True)]
    assert r.msb / r.msw == pytest.approx(stats.f_oneway(*groups).statistic)
    # Beta-binomial prompts: ICC = 1/(a+b+1) = 0.2 with a + b = 4.
    rng = np.random.default_rng(9)
    m = np.full(400, 20)
    planted = lab.icc_anova(rng.binomial(m, rng.beta(1.2, 2.8, size=400)), m)
    assert planted.icc == pytest.approx(0.2, abs=0.04)
    assert planted.design_effect == pytest.approx(1 + 19 * planted.icc)
    assert planted.effective_n == pytest.approx(8000 / planted.design_effect)


# ---------------------------------------------------------------- sample sizes (§5.4)


def test_sample_sizes_reproduce_the_reference_table():
    widths = [0.10, 0.05, 0.03, 0.02, 0.01]
    assert [lab.n_for_half_width(e, 0.5) for e in widths] == [97, 385, 1068, 2401, 9604]
    assert [lab.n_for_half_width(e, 0.1) for e in widths] == [35, 139, 385, 865, 3458]
    assert [lab.n_for_half_width(0.05, categories=k) for k in (2, 4, 7, 10)] == [503, 624, 724, 788]
    assert lab.n_for_half_width(0.03, categories=10) == 2189
    pairs = [(0.5, 0.6), (0.5, 0.55), (0.3, 0.4), (0.1, 0.2), (0.9, 0.95)]
    assert [lab.n_per_arm_two_proportions(a, b) for a, b in pairs] == [388, 1565, 356, 199, 435]
    assert [lab.n_for_goodness_of_fit(w, k) for w in (0.1, 0.3, 0.5) for k in (2, 10)] == [785, 1565, 88, 174,
                                                                                              32, 63]
    assert [lab.n_to_see_rare_mode(p) for p in (0.05, 0.01, 0.001)] == [59, 299, 2995]


# ---------------------------------------------------------------- results serialise


def test_every_result_serialises_to_strict_json():
    results = [
        lab.wilson_interval(3, 9), lab.simultaneous_intervals(COUNTS_10),
        lab.reference_gaps([0, 5], [0.0, 1.0]),
        lab.distance_to_reference([3, 4], lab.Reference.from_counts([5, 5])),
        lab.entropy_summary([3, 4], draws=50), lab.mad_test([3, 4]), lab.rogan_gladen(3, 9, 0.9, 0.9),
        lab.correct_for_confusion([3, 4], [[9, 1], [1, 9]], draws=50), lab.benjamini_hochberg([0.01, 0.5]),
        lab.dose_response([1, 10], [3, 8], [10, 10]), lab.icc_anova([1, 5], [6, 6]), lab.Reference.uniform(3),
    ]
    for result in results:
        encoded = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        assert set(encoded) == set(result.__dataclass_fields__)
    assert results[0].to_dict() == {"estimate": 3 / 9, "low": pytest.approx(0.1206, abs=1e-4),
                                    "high": pytest.approx(0.6458, abs=1e-4), "confidence": 0.95,
                                    "method": "wilson"}
