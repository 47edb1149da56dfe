"""Significance tests for matched-pair head comparisons (DESIGN.md, "Statistics protocol").

Per cell (backbone, dataset) and pair of heads, the inputs are per-split differences ``d_j`` of a
metric (seeds averaged within a split first), over ``J >= 10`` random train/test splits:

* :func:`corrected_resampled_ttest` — Nadeau & Bengio (2003), and :func:`corrected_resampled_ci`,
  the confidence interval that inverts it; the only per-split test whose type-I error is near
  alpha (0.040 at alpha = .05 over 1000 simulated null grids, ``results/calibration``);
* :func:`naive_paired_ttest` and :func:`wilcoxon_p` — descriptive only, for comparison with published
  practice: both ignore the overlap of the training sets and are anti-conservative on per-split
  differences (type-I error 0.254 and 0.246 at alpha = .05 in the same calibration);
* :func:`paired_bootstrap_srcc_cis` (several head pairs, one set of resamples) and
  :func:`paired_bootstrap_srcc_ci` (one pair) — CI of ΔSRCC on one split's shared test predictions;
* :func:`holm` — family-wise correction over all cells of a grid;
* :func:`across_dataset_wilcoxon`, :func:`friedman_test`, :func:`average_ranks`,
  :func:`nemenyi_critical_difference` — comparisons across datasets / more than two heads.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from statsmodels.stats.multitest import multipletests

logger = logging.getLogger(__name__)

MIN_DATASETS_FOR_SIGNIFICANCE = 6
"""Smallest number of non-zero paired differences for which the exact two-sided Wilcoxon signed-rank
test can reach p < .05 (its minimum p-value is ``2 / 2**n``: 0.0625 for n = 5, 0.03125 for n = 6)."""


class StatsInputError(ValueError):
    """Raised when the inputs of a statistical test are unusable (too few values, NaN, bad shape)."""


def _deltas(deltas: ArrayLike, min_len: int, what: str = "deltas") -> NDArray[np.float64]:
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1:
        raise StatsInputError(f"{what} must be 1-D (one value per split), got shape {d.shape}.")
    if d.size < min_len:
        raise StatsInputError(f"need at least {min_len} {what}, got {d.size}; run more splits.")
    bad = np.flatnonzero(~np.isfinite(d))
    if bad.size:
        raise StatsInputError(
            f"{what} contain {bad.size} non-finite value(s) (first at index {bad[0]}); "
            "a failed run must be redone, not averaged in."
        )
    return d


def _degenerate_t(d: NDArray[np.float64]) -> tuple[float, float]:
    """(t, p) when all differences are identical: the sample variance is exactly zero."""
    mean = float(d[0])
    if mean == 0.0:
        return 0.0, 1.0
    return math.copysign(math.inf, mean), 0.0


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
        Training and test set sizes of one split (for IQA 80/20 splits the ratio is 0.25).

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
    # Hand-written: no scipy/statsmodels function implements the Nadeau-Bengio variance correction.
    d = _deltas(deltas, min_len=2)
    if n_train <= 0 or n_test <= 0:
        raise StatsInputError(f"n_train and n_test must be positive, got n_train={n_train}, n_test={n_test}.")
    if np.all(d == d[0]):
        return _degenerate_t(d)
    j = d.size
    t = float(np.mean(d) / math.sqrt((1.0 / j + n_test / n_train) * np.var(d, ddof=1)))
    p = float(2.0 * stats.t.sf(abs(t), df=j - 1))
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
    # Hand-written: the interval inverting the Nadeau-Bengio test; no library offers it.
    d = _deltas(deltas, min_len=2)
    if n_train <= 0 or n_test <= 0:
        raise StatsInputError(f"n_train and n_test must be positive, got n_train={n_train}, n_test={n_test}.")
    if not 0.0 < confidence < 1.0:
        raise StatsInputError(f"confidence must lie in (0, 1), got {confidence}.")
    mean = float(np.mean(d))
    if np.all(d == d[0]):
        return mean, mean
    j = d.size
    se = math.sqrt((1.0 / j + n_test / n_train) * np.var(d, ddof=1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, j - 1)) * se
    return mean - half, mean + half


def naive_paired_ttest(deltas: ArrayLike) -> tuple[float, float]:
    """Plain one-sample t-test of the per-split differences against 0 (``scipy.stats.ttest_1samp``).

    Anti-conservative for resampled splits (it ignores the overlap of training sets: type-I error
    0.254 at alpha = .05 over 1000 simulated null grids, ``results/calibration``); kept only to show
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
    d = _deltas(deltas, min_len=2)
    if np.all(d == d[0]):
        return _degenerate_t(d)
    res = stats.ttest_1samp(d, 0.0)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_p(deltas: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the differences (``scipy.stats.wilcoxon``).

    On per-split differences of resampled splits this test is anti-conservative, like the naive
    t-test and for the same reason: it treats the ``d_j`` as independent although the training sets
    of the splits overlap (type-I error 0.246 at alpha = .05 over 1000 simulated null grids,
    ``results/calibration``). Report it there only as a descriptive figure, for comparison with
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
    d = _deltas(deltas, min_len=1)
    if np.all(d == 0.0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def _centred_ranks(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Average ranks along the last axis (as ``spearmanr`` uses), minus their mean."""
    r = stats.rankdata(x, axis=-1)
    return r - r.mean(axis=-1, keepdims=True)


def _pearson_rows(ra: NDArray[np.float64], rb: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(ra * rb, axis=-1) / np.sqrt(np.sum(ra**2, axis=-1) * np.sum(rb**2, axis=-1))


def rowwise_srcc(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Spearman correlation along the last axis, vectorised over all leading axes.

    Equal to ``scipy.stats.spearmanr`` applied to each row pair (Pearson correlation of average
    ranks, so ties are handled the same way); NaN for a constant row.

    Parameters
    ----------
    a, b : array_like
        Arrays of the same shape ``(..., n)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(...)``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise StatsInputError(f"rowwise_srcc needs arrays of equal shape, got {a.shape} and {b.shape}.")
    return _pearson_rows(_centred_ranks(a), _centred_ranks(b))


def _resample_centred_ranks(groups: NDArray[np.intp], idx: NDArray[np.intp]) -> NDArray[np.float64]:
    """Average ranks, minus their mean, of ``x[idx]`` along the last axis, from the tie groups of ``x``.

    ``groups`` are the dense ranks of the original values ``x`` (0, 1, ... for the distinct values in
    increasing order). Within a resample the average rank of a value is (number of drawn values in
    lower groups) + (number drawn from its group + 1) / 2: exactly ``scipy.stats.rankdata(x[idx],
    axis=-1)``, ties and repeated draws included, in linear time instead of a sort per resample.
    """
    # Hand-written: scipy's rankdata sorts every resample; counting the draws per tie group avoids it.
    lead, m = idx.shape[:-1], idx.shape[-1]
    n = groups.size
    g = groups[idx].reshape(-1, m)
    flat = g + n * np.arange(g.shape[0])[:, None]  # position of (resample, group) in a (rows, n) table
    counts = np.bincount(flat.ravel(), minlength=flat.size // m * n).reshape(-1, n)
    average = np.cumsum(counts, axis=1) - (counts - 1) / 2.0 - (m + 1) / 2.0
    return average.ravel()[flat].reshape(*lead, m)


def _validated_predictions(
    mos: ArrayLike, predictions: Mapping[str, ArrayLike], pairs: Sequence[tuple[str, str]]
) -> tuple[NDArray[np.float64], dict[str, NDArray[np.float64]]]:
    """``mos`` and the predictions of the heads named in ``pairs`` as checked 1-D float arrays."""
    heads = list(dict.fromkeys(h for pair in pairs for h in pair))
    unknown = [h for h in heads if h not in predictions]
    if unknown:
        raise StatsInputError(
            f"pairs name heads without predictions: {unknown}; heads with predictions: {sorted(predictions)}."
        )
    mos_array = np.asarray(mos, dtype=np.float64)
    arrays = {h: np.asarray(predictions[h], dtype=np.float64) for h in heads}
    if any(a.ndim != 1 or a.shape != mos_array.shape for a in [mos_array, *arrays.values()]):
        shapes = ", ".join(f"{name}: {a.shape}" for name, a in [("MOS", mos_array), *arrays.items()])
        raise StatsInputError(
            "mos and every head's predictions must be 1-D arrays of equal length (one value per shared "
            f"test image), got shapes {shapes}."
        )
    _deltas(mos_array, min_len=3, what="MOS values")
    for head, a in arrays.items():
        _deltas(a, min_len=3, what=f"predictions of head {head!r}")
    return mos_array, arrays


def paired_bootstrap_srcc_cis(
    mos: ArrayLike,
    predictions: Mapping[str, ArrayLike],
    pairs: Sequence[tuple[str, str]],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> dict[tuple[str, str], tuple[float, float]]:
    """Paired bootstrap confidence intervals of ``SRCC(mos, A) - SRCC(mos, B)`` for several head pairs.

    Images are resampled with replacement, the same indices for the MOS and every head's predictions
    (``scipy.stats.bootstrap`` on the image indices, as ``paired=True`` does), so the strong
    correlation between heads scored on the same test images is kept. Every pair uses the same
    resamples, and each head is ranked once per resample however many pairs it is in; ranks come
    from counting the drawn copies of each original value (exact average ranks, as
    ``scipy.stats.spearmanr`` uses, in linear time).

    The default interval is BCa (bias-corrected and accelerated): SRCC differences are bounded and
    often skewed, and BCa corrects for bias and skewness where the percentile interval does not;
    ``method="percentile"`` or ``"basic"`` may be passed instead.

    Parameters
    ----------
    mos : array_like
        1-D MOS of the shared test images.
    predictions : mapping of str to array_like
        Head -> its predictions on the same images, in the same order as ``mos``.
    pairs : sequence of (str, str)
        Head pairs (A, B) to compare; every head named must be in ``predictions``.
    n_resamples : int, default 2000
        Bootstrap resamples.
    confidence : float, default 0.95
        Confidence level of the two-sided intervals.
    seed : int, default 0
        Seed of the resampling generator (the same seed gives the same resamples for any set of pairs).
    method : {"BCa", "percentile", "basic"}, default "BCa"
        Interval construction, passed to ``scipy.stats.bootstrap``.

    Returns
    -------
    dict
        (head A, head B) -> (low, high). NaN bounds when the MOS or a head's predictions are constant
        (SRCC is undefined; logged as a warning); ``(0.0, 0.0)`` when both heads rank the images
        identically (the difference is then 0 in every resample).

    Raises
    ------
    StatsInputError
        On a head without predictions, length mismatch, fewer than 3 images, or non-finite values.

    Examples
    --------
    >>> mos = [1.0, 2.0, 3.0, 4.0, 5.0]
    >>> paired_bootstrap_srcc_cis(mos, {"a": [1, 2, 3, 5, 4], "b": [2, 4, 6, 10, 8], "c": [3, 3, 3, 3, 3]},
    ...                           [("a", "b"), ("a", "c")])
    {('a', 'b'): (0.0, 0.0), ('a', 'c'): (nan, nan)}
    """
    mos_array, arrays = _validated_predictions(mos, predictions, pairs)
    nan = (float("nan"), float("nan"))
    if np.all(mos_array == mos_array[0]):
        logger.warning("constant MOS: SRCC is undefined, so are its bootstrap CIs.")
        return dict.fromkeys(pairs, nan)
    constant = [h for h, a in arrays.items() if np.all(a == a[0])]
    if constant:
        logger.warning("constant predictions of %s: SRCC is undefined, so is its bootstrap CI.", ", ".join(constant))
    # Dense ranks (tie groups) of the original values: SRCC depends on them only.
    mos_groups = np.unique(mos_array, return_inverse=True)[1]
    groups = {h: np.unique(a, return_inverse=True)[1] for h, a in arrays.items()}
    out: dict[tuple[str, str], tuple[float, float]] = {}
    tested = []
    for a, b in pairs:
        if a in constant or b in constant:
            out[(a, b)] = nan
        elif np.array_equal(groups[a], groups[b]):  # equal ranks: the difference is 0 in every resample
            out[(a, b)] = (0.0, 0.0)
        else:
            tested.append((a, b))
    if not tested:
        return out
    heads = list(dict.fromkeys(h for pair in tested for h in pair))

    def delta_srcc(idx: NDArray[np.intp], axis: int = -1) -> NDArray[np.float64]:
        idx = np.moveaxis(idx, axis, -1)
        mos_ranks = _resample_centred_ranks(mos_groups, idx)
        srcc = {h: _pearson_rows(mos_ranks, _resample_centred_ranks(groups[h], idx)) for h in heads}
        return np.stack([srcc[a] - srcc[b] for a, b in tested])

    # Resampling the image indices is what paired=True does inside scipy (same draws for the same rng).
    res = stats.bootstrap(
        (np.arange(mos_array.size),),
        delta_srcc,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
        batch=500,
    )
    ci = res.confidence_interval
    out.update({pair: (float(low), float(high)) for pair, low, high in zip(tested, ci.low, ci.high, strict=True)})
    return {pair: out[pair] for pair in pairs}


def paired_bootstrap_srcc_ci(
    mos: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> tuple[float, float]:
    """Paired bootstrap confidence interval of ``SRCC(mos, pred_a) - SRCC(mos, pred_b)``.

    The single-pair form of :func:`paired_bootstrap_srcc_cis` (same resamples for the same seed, so
    the same interval as that pair gets there). 2000 resamples of 1000 images take well under a
    second on one CPU core.

    Parameters
    ----------
    mos, pred_a, pred_b : array_like
        Same-length 1-D arrays: MOS and the two heads' predictions on the shared test images.
    n_resamples : int, default 2000
        Bootstrap resamples.
    confidence : float, default 0.95
        Confidence level of the two-sided interval.
    seed : int, default 0
        Seed of the resampling generator.
    method : {"BCa", "percentile", "basic"}, default "BCa"
        Interval construction, passed to ``scipy.stats.bootstrap``.

    Returns
    -------
    (low, high) : tuple of float
        Interval bounds; NaN when a head's predictions (or the MOS) are constant; ``(0.0, 0.0)`` when
        both heads rank the images identically.

    Raises
    ------
    StatsInputError
        On length mismatch, fewer than 3 images, or non-finite values.
    """
    pair = ("pred_a", "pred_b")
    return paired_bootstrap_srcc_cis(
        mos, dict(zip(pair, (pred_a, pred_b), strict=True)), [pair], n_resamples, confidence, seed, method
    )[pair]


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
    d = _deltas(values, min_len=1, what="per-dataset mean deltas")
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


def _score_table(scores: pd.DataFrame, min_heads: int) -> pd.DataFrame:
    if not isinstance(scores, pd.DataFrame):
        raise StatsInputError(
            f"scores must be a DataFrame (rows = blocks, columns = heads), got {type(scores).__name__}."
        )
    if scores.shape[1] < min_heads:
        raise StatsInputError(
            f"need at least {min_heads} heads (columns), got {scores.shape[1]}: {list(scores.columns)}; "
            "for two heads use the paired tests."
        )
    if scores.shape[0] < 2:
        raise StatsInputError(f"need at least 2 blocks (rows), got {scores.shape[0]}.")
    if scores.isna().to_numpy().any():
        rows = scores.index[scores.isna().any(axis=1)].tolist()
        raise StatsInputError(
            f"scores contain NaN in blocks {rows}; rerun those cells or drop those blocks explicitly."
        )
    return scores.astype(np.float64)


def friedman_test(scores: pd.DataFrame) -> tuple[float, float]:
    """Friedman test that all heads perform alike (``scipy.stats.friedmanchisquare``).

    Parameters
    ----------
    scores : pandas.DataFrame
        Rows are blocks (e.g. datasets or backbone × dataset cells), columns are heads (>= 3), values
        are a metric such as mean SRCC. No NaN.

    Returns
    -------
    (statistic, p) : tuple of float
        Chi-square statistic and p-value.
    """
    table = _score_table(scores, min_heads=3)
    res = stats.friedmanchisquare(*(table[c].to_numpy() for c in table.columns))
    return float(res.statistic), float(res.pvalue)


def average_ranks(scores: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Average rank of each head over blocks (rank 1 = best in a block; ties get average ranks).

    Parameters
    ----------
    scores : pandas.DataFrame
        Rows are blocks, columns are heads (>= 2), no NaN.
    higher_is_better : bool, default True
        True for correlations (SRCC, PLCC), False for errors (RMSE, MAE).

    Returns
    -------
    pandas.Series
        Mean rank per head, sorted best first.
    """
    table = _score_table(scores, min_heads=2)
    ranks = table.rank(axis=1, ascending=not higher_is_better, method="average")
    return ranks.mean(axis=0).sort_values()


def nemenyi_critical_difference(k_heads: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Critical difference of average ranks for the Nemenyi post-hoc test (Demšar 2006).

    ``CD = q_alpha * sqrt(k (k + 1) / (6 N))`` with ``q_alpha = studentized_range.ppf(1 - alpha, k, inf)
    / sqrt(2)``. Two heads whose average ranks differ by more than CD differ significantly. Only
    meaningful after a significant Friedman test with >= 3 heads.

    Parameters
    ----------
    k_heads : int
        Number of heads compared (>= 3).
    n_blocks : int
        Number of blocks (>= 2).
    alpha : float, default 0.05
        Family-wise significance level.

    Returns
    -------
    float
        The critical difference in rank units.
    """
    # Hand-written: the CD formula is not in scipy/statsmodels; q comes from scipy's studentized range.
    if k_heads < 3:
        raise StatsInputError(f"the Nemenyi critical difference needs >= 3 heads, got k_heads={k_heads}.")
    if n_blocks < 2:
        raise StatsInputError(f"need at least 2 blocks, got n_blocks={n_blocks}.")
    if not 0.0 < alpha < 1.0:
        raise StatsInputError(f"alpha must lie in (0, 1), got {alpha}.")
    q = stats.studentized_range.ppf(1.0 - alpha, k_heads, np.inf) / math.sqrt(2.0)
    return float(q * math.sqrt(k_heads * (k_heads + 1) / (6.0 * n_blocks)))
