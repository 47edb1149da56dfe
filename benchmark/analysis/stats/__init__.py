"""Significance tests for matched-pair head comparisons (DESIGN.md, "Statistics protocol").

Per cell (backbone, dataset) and pair of heads, the inputs are per-split differences ``d_j`` of a
metric (seeds averaged within a split first), over ``J >= 10`` random train/test splits.

* :mod:`~benchmark.analysis.stats.frequentist` — the corrected resampled t-test (Nadeau & Bengio 2003) and its
  interval, the naive t-test and Wilcoxon (descriptive only), the cross-dataset caveat, Holm, the
  across-dataset Wilcoxon;
* :mod:`~benchmark.analysis.stats.bayes` — the correlated Bayesian t-test with a ROPE and its verdict (evidence
  for "no difference", which a p-value cannot give);
* :mod:`~benchmark.analysis.stats.power` — power and minimum detectable effect of the corrected test, split and
  seed variance components, "How many splits do I need?";
* :mod:`~benchmark.analysis.stats.bootstrap` — paired bootstrap CI of ΔSRCC on one split's test predictions,
  resampling images or whole references;
* :mod:`~benchmark.analysis.stats.ranks` — independent (backbone, dataset) blocks; Friedman test, average ranks and
  Nemenyi critical difference over them.

Every name is importable from ``benchmark.analysis.stats`` directly.
"""

from benchmark.analysis.stats._inputs import StatsInputError
from benchmark.analysis.stats.bayes import DEFAULT_ROPE, VERDICTS, bayesian_correlated_ttest, verdict
from benchmark.analysis.stats.bootstrap import paired_bootstrap_srcc_ci, paired_bootstrap_srcc_cis, rowwise_srcc
from benchmark.analysis.stats.frequentist import (
    MIN_DATASETS_FOR_SIGNIFICANCE,
    across_dataset_wilcoxon,
    corrected_resampled_ci,
    corrected_resampled_ttest,
    cross_dataset_caveat,
    holm,
    naive_paired_ttest,
    wilcoxon_p,
)
from benchmark.analysis.stats.power import (
    TARGET_POWER,
    VarianceComponents,
    corrected_ttest_power,
    mde80,
    mde_vs_splits,
    split_seed_variance,
)
from benchmark.analysis.stats.ranks import (
    MIN_INDEPENDENT_BLOCKS,
    average_ranks,
    friedman_test,
    independent_blocks,
    nemenyi_critical_difference,
)

__all__ = [
    "DEFAULT_ROPE",
    "MIN_DATASETS_FOR_SIGNIFICANCE",
    "MIN_INDEPENDENT_BLOCKS",
    "TARGET_POWER",
    "VERDICTS",
    "StatsInputError",
    "VarianceComponents",
    "across_dataset_wilcoxon",
    "average_ranks",
    "bayesian_correlated_ttest",
    "corrected_resampled_ci",
    "corrected_resampled_ttest",
    "corrected_ttest_power",
    "cross_dataset_caveat",
    "friedman_test",
    "holm",
    "independent_blocks",
    "mde80",
    "mde_vs_splits",
    "naive_paired_ttest",
    "nemenyi_critical_difference",
    "paired_bootstrap_srcc_ci",
    "paired_bootstrap_srcc_cis",
    "rowwise_srcc",
    "split_seed_variance",
    "verdict",
    "wilcoxon_p",
]
