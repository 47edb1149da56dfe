"""Failed runs: an exact paired test of two heads' failure rates, and a worst-rank sensitivity analysis.

A run fails by its head's own doing when its model diverges or predicts a constant. The report's answer
leaves such runs out (the differences are taken over the runs where both heads succeeded), so two
questions remain, and these pure functions answer them on the per-(split, seed) runs of one cell:

* :func:`paired_failure_test` — does one head fail more often than the other? Both heads run on the same
  (split, seed) pairs, so the failures are paired; and runs of one split share its data, so they are not
  independent: the test is an exact sign test over splits (McNemar's test when each split has one seed);
* :func:`worst_rank_fill` — does the verdict depend on the score given to a failure? Replace each failed
  run's score by the worst score observed in the cell over both heads (a failure ranks last, but by no
  more than the worst real run) and rerun the per-split test on the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from benchmark.analysis.stats._inputs import StatsInputError


@dataclass(frozen=True)
class PairedFailureTest:
    """Result of :func:`paired_failure_test`.

    Attributes
    ----------
    n_pairs : int
        Paired runs (split, seed) compared.
    failures_a, failures_b : int
        Failed runs of each head.
    only_a, only_b : int
        Discordant units — splits (runs, when no splits are given) where head A failed more often than
        head B, and the reverse.
    p : float
        Two-sided exact sign-test p-value over the discordant units (1.0 when there is none).
    """

    n_pairs: int
    failures_a: int
    failures_b: int
    only_a: int
    only_b: int
    p: float


def _indicator(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    x = np.asarray(values)
    if x.ndim != 1:
        raise StatsInputError(f"{name} must be 1-D (one value per paired run), got shape {x.shape}.")
    if x.dtype != bool:
        if not np.isin(x, (0, 1)).all():
            bad = x[~np.isin(x, (0, 1))][:3].tolist()
            raise StatsInputError(f"{name} must hold booleans (or 0/1), got e.g. {bad}.")
        x = x.astype(bool)
    return x


def paired_failure_test(failed_a: ArrayLike, failed_b: ArrayLike, splits: ArrayLike | None = None) -> PairedFailureTest:
    """Exact test that two heads fail equally often on the same (split, seed) runs, at the split level.

    Per split, the difference between the heads' failure counts over its seeds; under the null (the heads
    are exchangeable) each non-zero difference is equally likely to favour either head, so the number of
    splits where A failed more is ``Binomial(discordant splits, 1/2)``: ``scipy.stats.binomtest``,
    two-sided. Splits are the independent units (seeds of one split share its data). With one seed per
    split, or ``splits=None`` (every run its own unit), this is the exact McNemar test.

    Parameters
    ----------
    failed_a, failed_b : array_like of bool
        One entry per paired run, aligned (entry ``i`` of both is the same split and seed): True where that
        head's run failed.
    splits : array_like, optional
        The split of each run; None treats every run as its own unit.

    Returns
    -------
    PairedFailureTest

    Raises
    ------
    StatsInputError
        When the inputs are not 1-D boolean (or 0/1) vectors of the same non-zero length.

    Examples
    --------
    >>> res = paired_failure_test([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    >>> res.only_a, res.only_b, round(res.p, 4)  # 2 * P(Bin(6, 1/2) >= 5) = 2 * 7 / 64
    (5, 1, 0.2188)
    >>> paired_failure_test([0, 1, 0], [0, 1, 0]).p  # no discordant pair: no evidence
    1.0
    >>> res = paired_failure_test([1, 1, 1, 0], [0, 0, 0, 1], splits=[0, 0, 1, 1])  # split 0: A 2-0, split 1: 1-1
    >>> res.only_a, res.only_b, res.p  # one discordant split
    (1, 0, 1.0)
    """
    a, b = _indicator(failed_a, "failed_a"), _indicator(failed_b, "failed_b")
    if a.size != b.size or a.size == 0:
        raise StatsInputError(f"failed_a and failed_b must be aligned non-empty vectors, got {a.size} and {b.size}.")
    units = np.arange(a.size) if splits is None else np.asarray(splits)
    if units.shape != a.shape:
        raise StatsInputError(f"splits must give one split per run ({a.size}), got shape {units.shape}.")
    _, unit = np.unique(units, return_inverse=True)
    difference = np.bincount(unit, weights=a.astype(float)) - np.bincount(unit, weights=b.astype(float))
    only_a, only_b = int(np.sum(difference > 0)), int(np.sum(difference < 0))
    p = float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    return PairedFailureTest(n_pairs=int(a.size), failures_a=int(a.sum()), failures_b=int(b.sum()),
                             only_a=only_a, only_b=only_b, p=p)


def worst_rank_fill(values_a: ArrayLike, values_b: ArrayLike, failed_a: ArrayLike, failed_b: ArrayLike,
                    higher_is_better: bool = True) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Both heads' scores with every failed run replaced by the worst score observed in the cell.

    The worst score is taken over the runs of both heads that did not fail, across all splits and seeds of
    the cell; a failed run then ranks with the worst real run instead of at 0 (or NaN). Compute the
    per-run differences from the result and rerun the test to see whether the verdict depends on how
    failures are scored.

    Parameters
    ----------
    values_a, values_b : array_like of float
        One score per paired run of the cell (e.g. test SRCC), aligned; a failed run's value is ignored
        (it may be 0 or NaN).
    failed_a, failed_b : array_like of bool
        Failure indicators, aligned with the values.
    higher_is_better : bool, default True
        True for correlations (worst = lowest), False for errors (worst = highest).

    Returns
    -------
    (filled_a, filled_b) : tuple of numpy.ndarray
        Copies of the scores with the failed runs filled.

    Raises
    ------
    StatsInputError
        When the inputs are not aligned 1-D vectors, a run that did not fail has a NaN/inf score, or every
        run of both heads failed (there is no observed score to rank against).

    Examples
    --------
    >>> a, b = worst_rank_fill([0.80, 0.0, 0.78], [0.75, 0.70, 0.0], [0, 1, 0], [0, 0, 1])
    >>> a.tolist(), b.tolist()  # the worst observed score is 0.70 (head B, run 1)
    ([0.8, 0.7, 0.78], [0.75, 0.7, 0.7])
    """
    fa, fb = _indicator(failed_a, "failed_a"), _indicator(failed_b, "failed_b")
    va, vb = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if not (va.ndim == 1 and va.shape == vb.shape == fa.shape == fb.shape):
        raise StatsInputError(f"values and failure flags must be aligned 1-D vectors, got shapes {va.shape}, "
                              f"{vb.shape}, {fa.shape}, {fb.shape}.")
    observed = np.concatenate([va[~fa], vb[~fb]])
    if observed.size == 0:
        raise StatsInputError("every run of both heads failed: there is no observed score to rank the failures by.")
    if not np.isfinite(observed).all():
        raise StatsInputError("a run that did not fail has a NaN/inf score; mark it failed or fix the score.")
    worst = observed.min() if higher_is_better else observed.max()
    return np.where(fa, worst, va), np.where(fb, worst, vb)
