"""Comparisons of three or more heads over blocks: Friedman test, average ranks, Nemenyi critical difference.

* :func:`independent_blocks` — one block per (backbone, dataset) group, splits and seeds averaged: the
  blocks these tests need (splits of one dataset share training data, so they are not blocks);
* :func:`friedman_test`, :func:`average_ranks`, :func:`nemenyi_critical_difference` — on such blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.analysis.stats._inputs import StatsInputError

MIN_INDEPENDENT_BLOCKS = 5
"""Fewest blocks for a Friedman test / critical-difference diagram. With 3 heads and 4 blocks even a
perfectly consistent order gives chi2 = 8 (p = 0.018), with 3 blocks p = 0.0498: fewer blocks leave the
test no room, and its chi-square approximation is poor with few blocks (Demšar 2006 asks for more than 10)."""
MIN_HEADS = 3


def independent_blocks(
    table: pd.DataFrame,
    value: str,
    block: Sequence[str] = ("backbone", "dataset"),
    head: str = "head",
    split: str = "split",
    seed: str | None = "seed",
) -> tuple[pd.DataFrame | None, str | None]:
    """Scores of every head on independent blocks: (backbone, dataset) groups with splits averaged.

    The J splits of one cell share most of their training data, so their results are strongly
    correlated; ranking heads over (cell x split) blocks counts each cell J times and makes the
    Friedman test anti-conservative: with three equal heads on 6 cells x 10 splits it rejected in
    0.316 of 500 simulated grids at alpha = .05, against 0.060 over the 6 cell blocks
    (``results/calibration``, study ``friedman``). This builds one
    block per ``block`` group instead: seeds are averaged within a split, then splits within the
    block, using only the (split, seed) runs where every head has a value so that all heads are
    averaged over the same runs.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per run: the ``block`` columns, ``split``, ``seed`` (optional), ``head`` and ``value``.
    value : str
        Column of the metric, e.g. ``"test_srcc"``.
    block : sequence of str, default ("backbone", "dataset")
        Columns that name a block. A block must hold one run per (split, seed, head): with several
        test datasets or regimes per (backbone, dataset), add those columns or filter the table.
        Blocks that share a dataset (two backbones on one dataset) still share its test images;
        ``block=("dataset",)`` is the strictest choice.
    head, split : str
        Columns of the head name and the split index.
    seed : str or None, default "seed"
        Column of the seed, or None when there is one run per split.

    Returns
    -------
    (scores, note) : (pandas.DataFrame or None, str or None)
        ``scores``: rows = blocks (indexed by the ``block`` columns), columns = heads, values = the
        split-averaged metric — the input of :func:`friedman_test`, :func:`average_ranks` and
        :func:`nemenyi_critical_difference`. ``None`` when fewer than 5 complete blocks or fewer than
        3 heads remain; ``note`` then says why. ``note`` also lists runs left out because another
        head lacks the same (split, seed), and blocks left out for having no complete run; else None.

    Raises
    ------
    StatsInputError
        When a column is missing or a block holds two rows for one (split, seed, head).

    Examples
    --------
    >>> runs = pd.DataFrame({"backbone": "r50", "dataset": np.repeat(list("ABCDE"), 6),
    ...                      "split": np.tile([0, 0, 0, 1, 1, 1], 5), "head": ["mse", "dor", "coral"] * 10,
    ...                      "test_srcc": np.tile([0.80, 0.82, 0.81, 0.70, 0.74, 0.71], 5)})
    >>> scores, note = independent_blocks(runs, "test_srcc", seed=None)
    >>> scores.round(3).iloc[0].to_dict(), len(scores), note
    ({'coral': 0.76, 'dor': 0.78, 'mse': 0.75}, 5, None)
    >>> independent_blocks(runs[runs["dataset"] != "E"], "test_srcc", seed=None)[1]
    'only 4 complete (backbone, dataset) block(s); a Friedman test / critical-difference diagram needs at least 5'
    """
    block = list(block)
    keys = [*block, split, *([seed] if seed is not None else [])]
    missing = [c for c in [*keys, head, value] if c not in table.columns]
    if missing:
        raise StatsInputError(f"the run table lacks column(s) {missing}; it has {list(table.columns)}.")
    duplicated = table.duplicated([*keys, head])
    if duplicated.any():
        first = table.loc[duplicated, [*keys, head]].iloc[0].to_dict()
        raise StatsInputError(
            f"{int(duplicated.sum())} row(s) repeat a (block, split, seed, head), e.g. {first}; add the column "
            "that tells them apart (test_dataset, regime) to `block`, or filter the table."
        )
    wide = table.set_index([*keys, head])[value].astype(np.float64).unstack(head)
    complete = wide.dropna()
    notes = []
    if len(complete) < len(wide):
        notes.append(f"{len(wide) - len(complete)} (block, split, seed) run(s) left out: not every head has a value")
    split_means = complete.groupby(block + [split]).mean()
    scores = split_means.groupby(block).mean()
    lost = wide.groupby(block).size().index.difference(scores.index)
    if len(lost):
        notes.append(f"block(s) {list(lost)} left out: no run with every head")
    label = f"({', '.join(block)})"
    if scores.shape[1] < MIN_HEADS:
        notes.insert(0, f"only {scores.shape[1]} head(s); a Friedman test / critical-difference diagram needs "
                        f"at least {MIN_HEADS}")
        return None, "; ".join(notes)
    if len(scores) < MIN_INDEPENDENT_BLOCKS:
        notes.insert(0, f"only {len(scores)} complete {label} block(s); a Friedman test / critical-difference "
                        f"diagram needs at least {MIN_INDEPENDENT_BLOCKS}")
        return None, "; ".join(notes)
    scores.columns.name = None
    return scores, "; ".join(notes) or None


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
