"""Significance tests for matched-pair head comparisons (DESIGN.md, "Statistics protocol").

Per cell (backbone, dataset) and pair of heads, the inputs are per-split differences ``d_j`` of a
metric (seeds averaged within a split first), over ``J >= 10`` random train/test splits.

* :mod:`~benchmark.stats.frequentist` — the corrected resampled t-test (Nadeau & Bengio 2003) and its
  interval, the naive t-test and Wilcoxon (descriptive only), Holm, the across-dataset Wilcoxon;
* :mod:`~benchmark.stats.bootstrap` — paired bootstrap CI of ΔSRCC on one split's test predictions;
* :mod:`~benchmark.stats.ranks` — Friedman test, average ranks and Nemenyi critical difference over blocks.

Every name is importable from ``benchmark.stats`` directly.
"""

from benchmark.stats._inputs import StatsInputError
from benchmark.stats.bootstrap import paired_bootstrap_srcc_ci, paired_bootstrap_srcc_cis, rowwise_srcc
from benchmark.stats.frequentist import (
    MIN_DATASETS_FOR_SIGNIFICANCE,
    across_dataset_wilcoxon,
    corrected_resampled_ci,
    corrected_resampled_ttest,
    holm,
    naive_paired_ttest,
    wilcoxon_p,
)
from benchmark.stats.ranks import average_ranks, friedman_test, nemenyi_critical_difference

__all__ = [
    "MIN_DATASETS_FOR_SIGNIFICANCE",
    "StatsInputError",
    "across_dataset_wilcoxon",
    "average_ranks",
    "corrected_resampled_ci",
    "corrected_resampled_ttest",
    "friedman_test",
    "holm",
    "naive_paired_ttest",
    "nemenyi_critical_difference",
    "paired_bootstrap_srcc_ci",
    "paired_bootstrap_srcc_cis",
    "rowwise_srcc",
    "wilcoxon_p",
]
