"""Frequentist tests of per-split differences, the multiple-comparison correction, across-dataset Wilcoxon.

* :func:`corrected_resampled_ttest` — Nadeau & Bengio (2003), and :func:`corrected_resampled_ci`,
  the confidence interval that inverts it, on split means: type-I error at or below alpha on simulated null
  cells (``results/calibration/summary.json``, studies ``null`` and ``effects``). With several seeds per
  split it over-corrects the seed noise; the
  variance-components test (:mod:`~benchmark.analysis.stats.components`) separates the two and falls back
  to this test with one seed per split;
* :func:`naive_paired_ttest` and :func:`wilcoxon_p` — descriptive only, for comparison with published
  practice: both ignore the overlap of the training sets and are anti-conservative on per-split
  differences (type-I errors far above alpha in the same calibration, study ``null``);
* :func:`cross_dataset_caveat` — marks the per-split tests of a cross-dataset cell as descriptive;
* :func:`holm` — family-wise correction over all cells of a grid;
* :func:`across_dataset_wilcoxon` — one mean difference per dataset, datasets as independent units.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from statsmodels.stats.multitest import multipletests

from benchmark.analysis.stats._inputs import (
    StatsInputError,
    check_open_unit,
    check_ratio,
    check_set_sizes,
    finite_vector,
)

MIN_DATASETS_FOR_SIGNIFICANCE = 6
"""Smallest number of non-zero paired differences for which the exact two-sided Wilcoxon signed-rank
test can reach p < .05 (its minimum p-value is ``2 / 2**n``: 0.0625 for n = 5, 0.03125 for n = 6)."""


def _degenerate_t(d: NDArray[np.float64]) -> tuple[float, float]:
    """(t, p) when all differences are identical: the sample variance is exactly zero."""
    mean = float(d[0])
    if mean == 0.0:
        return 0.0, 1.0
    return math.copysign(math.inf, mean), 0.0


def corrected_se(d: NDArray[np.float64], ratio: float) -> float:
    """Nadeau-Bengio standard error of ``mean(d)``: ``sqrt((1/J + ratio) * var(d, ddof=1))``.

    ``d`` is a checked vector of ``J >= 2`` per-split differences and ``ratio = n_test / n_train``; the
    corrected test, its interval, the correlated Bayesian t-test and the power functions all scale by it.
    """
    return math.sqrt((1.0 / d.size + ratio) * np.var(d, ddof=1))


def corrected_resampled_ttest(deltas: ArrayLike, n_train: int, n_test: int) -> tuple[float, float]:
    """Corrected resampled t-test of Nadeau & Bengio (2003), two-sided.

    ``t = mean(d) / sqrt((1/J + n_test/n_train) * var(d, ddof=1))`` with ``J - 1`` degrees of freedom.
    The ``n_test/n_train`` term inflates the variance to account for the correlation between splits
    whose training sets overlap.

    Parameters
    ----------
    deltas : array_like
        Per-split differences ``d_j`` (head A minus head B), ``J >= 2`` finite values.
    n_train, n_test : int
        Training and test set sizes of one split (the suite's 60/20/20 train/val/test splits: ratio 1/3).

    Returns
    -------
    t : float
        Test statistic. If every ``d_j`` is identical the variance is zero: ``t = ±inf`` and ``p = 0``
        when that common value is non-zero, ``t = 0`` and ``p = 1`` when it is zero (no evidence).
    p : float
        Two-sided p-value from Student's t with ``J - 1`` degrees of freedom.

    Raises
    ------
    StatsInputError
        (a ``ValueError``) when ``J < 2``, a delta is NaN/inf, or a set size is not positive.
    """
    return corrected_ttest(deltas, check_set_sizes(n_train, n_test))


def corrected_ttest(deltas: ArrayLike, r: float) -> tuple[float, float]:
    """:func:`corrected_resampled_ttest` with the split correlation given as ``r`` (``n_test / n_train`` there, or
    an assumed value): ``t = mean(d) / sqrt((1/J + r) var(d, ddof=1))``, ``J - 1`` df; ``(t, p)``."""
    # Hand-written: no scipy/statsmodels function implements the Nadeau-Bengio variance correction.
    d = finite_vector(deltas, min_len=2)
    ratio = check_ratio(r)
    if np.all(d == d[0]):
        return _degenerate_t(d)
    t = float(np.mean(d) / corrected_se(d, ratio))
    p = float(2.0 * stats.t.sf(abs(t), df=d.size - 1))
    return t, p


def corrected_resampled_ci(
    deltas: ArrayLike, n_train: int, n_test: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Confidence interval of the mean difference that matches :func:`corrected_resampled_ttest`.

    ``mean(d) ± t_{(1 + confidence) / 2, J - 1} * sqrt((1/J + n_test/n_train) * var(d, ddof=1))``: it
    excludes 0 exactly when the two-sided corrected test rejects at ``1 - confidence``.

    Parameters
    ----------
    deltas : array_like
        Per-split differences ``d_j``, ``J >= 2`` finite values.
    n_train, n_test : int
        Training and test set sizes of one split.
    confidence : float, default 0.95
        Confidence level, in (0, 1).

    Returns
    -------
    (low, high) : tuple of float
        Interval bounds; ``(mean, mean)`` when every ``d_j`` is identical (zero variance).

    Raises
    ------
    StatsInputError
        As :func:`corrected_resampled_ttest`, or when ``confidence`` is outside (0, 1).

    Examples
    --------
    >>> low, high = corrected_resampled_ci([0.01, 0.03, 0.02, 0.02], n_train=300, n_test=100)
    >>> round(low, 4), round(high, 4)  # 0.02 ± 3.1824 * sqrt((1/4 + 1/3) * 0.0002 / 3)
    (0.0002, 0.0398)
    """
    return corrected_ci(deltas, check_set_sizes(n_train, n_test), confidence)


def corrected_ci(deltas: ArrayLike, r: float, confidence: float = 0.95) -> tuple[float, float]:
    """:func:`corrected_resampled_ci` with the split correlation given as ``r``."""
    # Hand-written: the interval inverting the Nadeau-Bengio test; no library offers it.
    d = finite_vector(deltas, min_len=2)
    ratio = check_ratio(r)
    check_open_unit(confidence, "confidence")
    mean = float(np.mean(d))
    if np.all(d == d[0]):
        return mean, mean
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, d.size - 1)) * corrected_se(d, ratio)
    return mean - half, mean + half


def cross_dataset_caveat(dataset: str, test_dataset: str) -> str | None:
    """Why the per-split tests of a cross-dataset cell are descriptive only; None for a within-dataset cell.

    A cross-dataset cell trains on a split of ``dataset`` and tests on the whole of ``test_dataset``
    in every split: the test set is fixed and only the training subset varies. The per-split
    differences then show only the training-subset (and seed) variation; the variation from which
    test images happened to be in ``test_dataset`` is shared by every split and invisible in
    ``var(d)``, yet it is most of the variance of ``mean(d)``. No factor computed from set sizes
    alone repairs that. On simulated null cross-dataset cells (``results/calibration/summary.json``, study
    ``cross_dataset``) ``Var(mean d) / E[var(d)]`` was many times what any of these factors assumes — the
    naive t-test's ``1/J``, the within-dataset correction, ``n_test = |test dataset|`` (what a report
    computes from the logged sizes) or a correction from the training-set overlap alone — and every such
    test rejected a true null far too often. Adding a bootstrap variance over the target's images (which
    needs every split's predictions) brought the rate near alpha, but that rests on a heuristic for the
    source dataset's share of the variance, measured on one toy model only. So the corrected t-test, its
    interval, the Bayesian verdict and the MDE of a
    cross-dataset cell are reported as descriptive, kept out of the Holm family, and never starred.

    Parameters
    ----------
    dataset, test_dataset : str
        Training and test dataset of the cell (the ``dataset`` and ``test_dataset`` tags).

    Returns
    -------
    str or None
        A sentence to print beside the cell's p-values, or None when they are valid (same dataset).

    Examples
    --------
    >>> cross_dataset_caveat("KonIQ-10k", "KonIQ-10k") is None
    True
    >>> cross_dataset_caveat("KonIQ-10k", "SPAQ")[:60]
    'cross-dataset cell (trained on KonIQ-10k, tested on all of S'
    """
    if dataset == test_dataset:
        return None
    return (
        f"cross-dataset cell (trained on {dataset}, tested on all of {test_dataset} in every split): the "
        "splits share one fixed test set, so the per-split spread misses the test-set sampling variation "
        "and the p-value, interval, verdict and MDE are descriptive only (not in the Holm family)."
    )


def naive_paired_ttest(deltas: ArrayLike) -> tuple[float, float]:
    """Plain one-sample t-test of the per-split differences against 0 (``scipy.stats.ttest_1samp``).

    Anti-conservative for resampled splits (it ignores the overlap of training sets: see its type-I error
    on simulated null cells, ``results/calibration/summary.json``, study ``null``); kept only to show
    how much the correction matters. Zero-variance inputs follow the convention of
    :func:`corrected_resampled_ttest`.

    Parameters
    ----------
    deltas : array_like
        Per-split differences, ``J >= 2`` finite values.

    Returns
    -------
    (t, p) : tuple of float
        Statistic and two-sided p-value.
    """
    d = finite_vector(deltas, min_len=2)
    if np.all(d == d[0]):
        return _degenerate_t(d)
    res = stats.ttest_1samp(d, 0.0)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_p(deltas: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the differences (``scipy.stats.wilcoxon``).

    On per-split differences of resampled splits this test is anti-conservative, like the naive
    t-test and for the same reason: it treats the ``d_j`` as independent although the training sets
    of the splits overlap (see its type-I error on simulated null cells, ``results/calibration/summary.json``,
    study ``null``). Report it there only as a descriptive figure, for comparison with
    published practice; base significance on :func:`corrected_resampled_ttest`. On per-dataset
    means (:func:`across_dataset_wilcoxon`) the datasets are independent and the test is valid.

    Zero differences are dropped (``zero_method="wilcox"``, scipy's default); if every difference
    is zero there is no evidence either way and ``p = 1.0``.

    Parameters
    ----------
    deltas : array_like
        Per-split (or per-dataset) differences, at least one finite value.

    Returns
    -------
    float
        Two-sided p-value (exact for small samples without ties, per scipy's ``method="auto"``).

    Examples
    --------
    >>> wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5])  # all positive: exact p = 2 / 2**5
    0.0625
    """
    d = finite_vector(deltas, min_len=1)
    if np.all(d == 0.0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def holm(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Holm step-down adjusted p-values (``statsmodels`` ``multipletests(method="holm")``).

    NaN entries (cells whose test was undefined) stay NaN and are excluded from the family, so
    they neither count towards the number of hypotheses nor get a value.

    Parameters
    ----------
    pvalues : array_like
        Raw p-values in [0, 1], any shape; NaN allowed.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, same shape as the input.

    Raises
    ------
    StatsInputError
        When a non-NaN value lies outside [0, 1].

    Examples
    --------
    >>> holm([0.01, 0.04, float("nan"), 0.03]).round(4).tolist()
    [0.03, 0.06, nan, 0.06]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    vals = p[ok]
    if np.any((vals < 0) | (vals > 1)):
        raise StatsInputError(f"p-values must lie in [0, 1], got {vals[(vals < 0) | (vals > 1)].tolist()}.")
    if vals.size:
        # statsmodels' multipletests runs gc.collect(), which scans the whole heap (with MLflow, torch
        # and pandas loaded ~0.3 s a call); with the long-lived objects frozen first it takes well
        # under a millisecond.
        gc.freeze()
        try:
            out[ok] = multipletests(vals, method="holm")[1]
        finally:
            gc.unfreeze()
    return out


def across_dataset_wilcoxon(
    per_dataset_mean_deltas: Mapping[str, float] | pd.Series | Sequence[float] | ArrayLike,
) -> tuple[float, str | None]:
    """Wilcoxon signed-rank test over datasets of the per-dataset mean differences.

    Parameters
    ----------
    per_dataset_mean_deltas : mapping, Series or sequence of float
        One mean difference (head A minus head B) per dataset.

    Returns
    -------
    p : float
        Two-sided p-value (1.0 when every mean difference is zero).
    caveat : str or None
        A sentence to print beside the result when fewer than 6 datasets have a non-zero difference:
        the exact two-sided test's smallest attainable p is ``2 / 2**n`` (0.0625 for n = 5,
        0.03125 for n = 6), so with n < 6 it can never reach p < .05 however large the effect.
    """
    values = (
        list(per_dataset_mean_deltas.values())
        if isinstance(per_dataset_mean_deltas, Mapping)
        else per_dataset_mean_deltas
    )
    d = finite_vector(values, min_len=1, what="per-dataset mean deltas")
    p = wilcoxon_p(d)
    n_eff = int(np.count_nonzero(d))
    caveat = None
    if n_eff < MIN_DATASETS_FOR_SIGNIFICANCE:
        min_p = 2.0 / 2**n_eff if n_eff else 1.0
        caveat = (
            f"with N = {n_eff} < {MIN_DATASETS_FOR_SIGNIFICANCE} datasets (non-zero differences) "
            f"the two-sided Wilcoxon test cannot reach p < .05 (smallest attainable p = {min_p:.4g}); "
            "read the per-dataset tests instead."
        )
    return p, caveat
