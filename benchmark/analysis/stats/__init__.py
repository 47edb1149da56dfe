"""Significance tests for matched-pair head comparisons.

Per cell (backbone, dataset) and pair of heads, the inputs are per-run differences ``d_js`` of a metric
over ``J >= 10`` random train/test splits and ``S_j`` seeds per split (or their split means ``d_j``).

* :mod:`~benchmark.analysis.stats.frequentist` — the corrected resampled t-test (Nadeau & Bengio 2003) and its
  interval, the naive t-test and Wilcoxon (descriptive only), the cross-dataset caveat, Holm, the
  across-dataset Wilcoxon;
* :mod:`~benchmark.analysis.stats.bayes` — the correlated Bayesian t-test with a ROPE and its verdict (evidence
  for "no difference", which a p-value cannot give);
* :mod:`~benchmark.analysis.stats.components` — the variance-components (VC) test of per-run differences:
  split and seed noise separated, only the split part inflated by the training-set overlap; a t-test and a
  Bayesian posterior (with ROPE), falling back to the corrected test with one seed per split;
* :mod:`~benchmark.analysis.stats.targets` — what a test speaks for: the dataset target (paired t-test on the
  split means, exact for "over random splits of this dataset"; primary) and the population extrapolation
  (the VC test under an assumed ``r``, with the break-even ``r*`` at which its conclusions flip);
* :mod:`~benchmark.analysis.stats.power` — power and minimum detectable effect of the corrected and the VC
  test, split and seed variance components, designs ("How many splits do I need?");
* :mod:`~benchmark.analysis.stats.failures` — exact paired test of two heads' failure rates, worst-rank
  sensitivity of a failed run's score;
* :mod:`~benchmark.analysis.stats.bootstrap` — paired bootstrap CI of ΔSRCC on one split's test predictions,
  resampling images or whole references;
* :mod:`~benchmark.analysis.stats.ranks` — independent (backbone, dataset) blocks; Friedman test, average ranks,
  Nemenyi critical difference (and when to draw it) and pairwise signed-rank tests with Holm over them.

Every name is importable from ``benchmark.analysis.stats`` directly.
"""

from benchmark.analysis.stats._inputs import StatsInputError
from benchmark.analysis.stats.bayes import DEFAULT_ROPE, VERDICTS, bayesian_correlated_ttest, correlated_posterior, verdict
from benchmark.analysis.stats.bootstrap import (
    paired_bootstrap_srcc_ci,
    paired_bootstrap_srcc_cis,
    rowwise_srcc,
    weighted_srcc,
)
from benchmark.analysis.stats.components import (
    FALLBACK_TEST,
    MIN_SEED_DF,
    SATTERTHWAITE_MIN_SPLITS,
    SHARES,
    VC_SATTERTHWAITE,
    VC_WORST_SHARE,
    SplitSeedMoments,
    VarianceComponentsTest,
    VCPosterior,
    VCTTest,
    balanced_moments,
    rejection_rate,
    split_seed_moments,
    variance_components_test,
    vc_p_at,
    vc_posterior,
    vc_ttest,
    worst_share_critical,
    worst_share_p,
    worst_share_p_at,
)
from benchmark.analysis.stats.failures import PairedFailureTest, paired_failure_test, worst_rank_fill
from benchmark.analysis.stats.frequentist import (
    MIN_DATASETS_FOR_SIGNIFICANCE,
    across_dataset_wilcoxon,
    corrected_ci,
    corrected_resampled_ci,
    corrected_resampled_ttest,
    corrected_ttest,
    cross_dataset_caveat,
    holm,
    naive_paired_ttest,
    wilcoxon_p,
)
from benchmark.analysis.stats.power import (
    DEFAULT_DESIGNS,
    TARGET_POWER,
    VarianceComponents,
    corrected_ttest_power,
    design_table,
    mde80,
    split_seed_variance,
    uses_vc_test,
    vc_mde80,
    vc_power,
)
from benchmark.analysis.stats.targets import (
    DATASET,
    DATASET_TEST,
    MDE_RANGE,
    POPULATION,
    R_MAX,
    TARGETS,
    DatasetTargetTest,
    break_even_r,
    dataset_mde80,
    dataset_target_test,
    population_break_even,
)
from benchmark.analysis.stats.ranks import (
    MIN_INDEPENDENT_BLOCKS,
    average_ranks,
    critical_difference_decision,
    friedman_test,
    independent_blocks,
    nemenyi_critical_difference,
    pairwise_signed_rank_holm,
)

__all__ = [
    "DATASET",
    "DATASET_TEST",
    "DEFAULT_DESIGNS",
    "DEFAULT_ROPE",
    "FALLBACK_TEST",
    "MIN_DATASETS_FOR_SIGNIFICANCE",
    "MIN_INDEPENDENT_BLOCKS",
    "MDE_RANGE",
    "MIN_SEED_DF",
    "POPULATION",
    "R_MAX",
    "SATTERTHWAITE_MIN_SPLITS",
    "SHARES",
    "TARGETS",
    "TARGET_POWER",
    "VC_SATTERTHWAITE",
    "VC_WORST_SHARE",
    "VERDICTS",
    "DatasetTargetTest",
    "PairedFailureTest",
    "SplitSeedMoments",
    "StatsInputError",
    "VCPosterior",
    "VCTTest",
    "VarianceComponents",
    "VarianceComponentsTest",
    "across_dataset_wilcoxon",
    "average_ranks",
    "balanced_moments",
    "bayesian_correlated_ttest",
    "break_even_r",
    "corrected_ci",
    "corrected_resampled_ci",
    "corrected_resampled_ttest",
    "corrected_ttest",
    "correlated_posterior",
    "corrected_ttest_power",
    "critical_difference_decision",
    "cross_dataset_caveat",
    "dataset_mde80",
    "dataset_target_test",
    "design_table",
    "friedman_test",
    "holm",
    "independent_blocks",
    "mde80",
    "naive_paired_ttest",
    "nemenyi_critical_difference",
    "paired_bootstrap_srcc_ci",
    "paired_bootstrap_srcc_cis",
    "paired_failure_test",
    "population_break_even",
    "pairwise_signed_rank_holm",
    "rejection_rate",
    "rowwise_srcc",
    "split_seed_moments",
    "split_seed_variance",
    "uses_vc_test",
    "variance_components_test",
    "vc_mde80",
    "vc_p_at",
    "vc_posterior",
    "vc_power",
    "vc_ttest",
    "verdict",
    "weighted_srcc",
    "wilcoxon_p",
    "worst_rank_fill",
    "worst_share_critical",
    "worst_share_p",
    "worst_share_p_at",
]
