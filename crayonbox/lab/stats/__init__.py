"""Statistics for the bias lab: every share with an interval, every score with its noise floor. statsmodels
computes what it implements (one-share and Goodman intervals, Benjamini–Hochberg, the dose-response GLM); what
is hand-written here says why where it is.

Which function when:
- one share x/n ................ `wilson_interval` (default), `clopper_pearson_interval` (tiny counts)
- all K shares of an attribute . `simultaneous_intervals` (goodman / sison-glaz / bonferroni-wilson)
- against a reference q (census, uniform, or `Reference.from_counts(training-image counts)`):
  per category ................. `reference_gaps` (Δ = p̂ − q and p̂/q with intervals)
  overall ...................... `distance_to_reference` (TV, JS, KL + G / Pearson / Monte-Carlo tests)
- diversity .................... `entropy_summary` (Miller–Madow, normalised, effective number)
- published-style scores ....... `mad_test` (MAD, E_null[MAD | n, K], p-value)
- an imperfect instrument ...... `rogan_gladen` (binary), `correct_for_confusion` (K classes)
- many prompts × attributes .... `benjamini_hochberg`
- share vs condition_scale ..... `dose_response`
- prompts, models, clustering .. `cohens_h`, `icc_anova`, `design_effect`
- planning a run ............... `n_for_half_width`, `n_per_arm_two_proportions`, `n_for_goodness_of_fit`,
                                 `n_to_see_rare_mode`
Every result is a frozen dataclass with `to_dict()` for the report's JSON.
"""

from crayonbox.lab.stats.core import Reference, StatsResult
from crayonbox.lab.stats.correction import (
    CorrectionResult,
    RoganGladenResult,
    correct_for_confusion,
    project_to_simplex,
    rogan_gladen,
)
from crayonbox.lab.stats.distances import (
    DistanceResult,
    GoodnessOfFitResult,
    distance_to_reference,
    g_test,
    jensen_shannon,
    kl_divergence,
    monte_carlo_test,
    pearson_test,
    total_variation,
)
from crayonbox.lab.stats.diversity import EntropyResult, entropy_summary, miller_madow_entropy, plugin_entropy
from crayonbox.lab.stats.dose_response import DoseResponseResult, dose_response
from crayonbox.lab.stats.effects import ICCResult, cohens_h, design_effect, icc_anova
from crayonbox.lab.stats.gaps import GapResult, reference_gaps
from crayonbox.lab.stats.mad import MADResult, mad_noise_floor, mad_score, mad_test
from crayonbox.lab.stats.multinomial import SimultaneousIntervals, simultaneous_intervals
from crayonbox.lab.stats.multiplicity import FDRResult, benjamini_hochberg
from crayonbox.lab.stats.proportions import Interval, clopper_pearson_interval, wilson_bounds, wilson_interval
from crayonbox.lab.stats.sample_size import (
    n_for_goodness_of_fit,
    n_for_half_width,
    n_per_arm_two_proportions,
    n_to_see_rare_mode,
)

__all__ = [
    "CorrectionResult", "DistanceResult", "DoseResponseResult", "EntropyResult", "FDRResult", "GapResult",
    "ICCResult", "Interval", "MADResult", "Reference", "RoganGladenResult", "SimultaneousIntervals",
    "StatsResult", "GoodnessOfFitResult", "benjamini_hochberg", "clopper_pearson_interval", "cohens_h",
    "correct_for_confusion", "design_effect", "distance_to_reference", "dose_response", "entropy_summary",
    "g_test", "icc_anova", "jensen_shannon", "kl_divergence", "mad_noise_floor", "mad_score", "mad_test",
    "miller_madow_entropy", "monte_carlo_test", "n_for_goodness_of_fit", "n_for_half_width",
    "n_per_arm_two_proportions", "n_to_see_rare_mode", "pearson_test", "plugin_entropy", "project_to_simplex",
    "reference_gaps", "rogan_gladen", "simultaneous_intervals", "total_variation", "wilson_bounds",
    "wilson_interval",
]
