"""Comparisons of three or more heads over blocks: Friedman test, average ranks, Nemenyi critical difference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.stats._inputs import StatsInputError


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
