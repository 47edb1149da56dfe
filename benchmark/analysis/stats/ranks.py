"""Comparisons of three or more heads over blocks: Friedman test, average ranks, Nemenyi critical difference.

* :func:`independent_blocks` — one block per (backbone, dataset) group, splits and seeds averaged: the
  blocks these tests need (splits of one dataset share training data, so they are not blocks);
* :func:`friedman_test`, :func:`average_ranks`, :func:`nemenyi_critical_difference` — on such blocks;
* :func:`critical_difference_decision` — whether a critical-difference diagram is warranted: enough blocks
  and a Friedman test that rejects (the Nemenyi post-hoc test means nothing otherwise);
* :func:`pairwise_signed_rank_holm` — Benavoli et al. (2016)'s alternative to mean-rank post-hoc tests:
  a Wilcoxon signed-rank test per pair of heads over the blocks, Holm-adjusted. A mean-rank test compares
  two heads through the ranks of all the others (adding or dropping a third head can change it); the
  signed-rank test uses only the two heads' own paired scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.analysis.stats._inputs import StatsInputError, check_open_unit
from benchmark.analysis.stats.frequentist import holm, wilcoxon_p
from benchmark.schema import COLUMNS

MIN_INDEPENDENT_BLOCKS = 10
"""Fewest blocks for a Friedman test / critical-difference diagram: the Friedman statistic's chi-square
approximation and the Nemenyi critical difference are large-sample results, which Demšar (2006) uses
with N > 10 blocks (with 3 heads and 4 blocks even a perfectly consistent order gives p = 0.018, with 3
blocks p = 0.0498). On simulated null grids of 10 cell blocks the Friedman test and a pairwise signed-rank
test with Holm hold their level (``results/calibration/summary.json``, study ``friedman``)."""
MIN_HEADS = 3


def independent_blocks(
    table: pd.DataFrame,
    value: str,
    block: Sequence[str] = (COLUMNS.backbone, COLUMNS.dataset),
    head: str = COLUMNS.head,
    split: str = COLUMNS.split,
    seed: str | None = COLUMNS.seed,
) -> tuple[pd.DataFrame | None, str | None]:
    """Scores of every head on independent blocks: (backbone, dataset) groups with splits averaged.

    The J splits of one cell share most of their training data, so their results are strongly
    correlated; ranking heads over (cell x split) blocks counts each cell J times and makes the
    Friedman test anti-conservative: with three equal heads on 10 cells x 10 splits it rejects a true null
    far more often than alpha, over the 10 cell blocks at about alpha (``results/calibration/summary.json``,
    study ``friedman``). This builds one
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
        :func:`nemenyi_critical_difference`. ``None`` when fewer than 10 complete blocks
        (:data:`MIN_INDEPENDENT_BLOCKS`) or fewer than 3 heads remain; ``note`` then says why. ``note`` also
        lists runs left out because another head lacks the same (split, seed), and blocks left out for
        having no complete run; else None.

    Raises
    ------
    StatsInputError
        When a column is missing or a block holds two rows for one (split, seed, head).

    Examples
    --------
    >>> runs = pd.DataFrame({"backbone": "r50", "dataset": np.repeat(list("ABCDEFGHIJ"), 6),
    ...                      "split": np.tile([0, 0, 0, 1, 1, 1], 10), "head": ["mse", "dor", "coral"] * 20,
    ...                      "test_srcc": np.tile([0.80, 0.82, 0.81, 0.70, 0.74, 0.71], 10)})
    >>> scores, note = independent_blocks(runs, "test_srcc", seed=None)
    >>> scores.round(3).iloc[0].to_dict(), len(scores), note
    ({'coral': 0.76, 'dor': 0.78, 'mse': 0.75}, 10, None)
    >>> independent_blocks(runs[runs["dataset"] != "E"], "test_srcc", seed=None)[1]
    'only 9 complete (backbone, dataset) block(s); a Friedman test / critical-difference diagram needs at least 10'
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


def critical_difference_decision(scores: pd.DataFrame | None, alpha: float = 0.05) -> tuple[bool, str]:
    """Whether a critical-difference diagram is warranted, and why (for the report to print either way).

    The Nemenyi critical difference is a post-hoc test: it is drawn only when there are at least
    :data:`MIN_INDEPENDENT_BLOCKS` independent blocks and :data:`MIN_HEADS` heads, and the Friedman test
    rejects "all heads perform alike" at ``alpha``. Otherwise the diagram's bars would suggest differences
    the omnibus test did not find.

    Parameters
    ----------
    scores : pandas.DataFrame or None
        Rows = independent blocks, columns = heads (:func:`independent_blocks`); None when that returned
        none.
    alpha : float, default 0.05
        Level of the Friedman test.

    Returns
    -------
    (draw, reason) : (bool, str)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> scores = pd.DataFrame({"mse": rng.normal(0.70, 0.05, 12)}).assign(dor=lambda t: t["mse"] + 0.02,
    ...                                                                    coral=lambda t: t["mse"] + 0.01)
    >>> critical_difference_decision(scores)
    (True, 'Friedman chi2 = 24, p = 6.1e-06 < 0.05 over 12 blocks: the critical-difference diagram is warranted')
    >>> critical_difference_decision(scores.iloc[:9])[1]
    'only 9 independent block(s); a Friedman test / critical-difference diagram needs at least 10'
    """
    check_open_unit(alpha, "alpha")
    if scores is None or len(scores) < MIN_INDEPENDENT_BLOCKS:
        n = 0 if scores is None else len(scores)
        return False, (f"only {n} independent block(s); a Friedman test / critical-difference diagram needs at "
                       f"least {MIN_INDEPENDENT_BLOCKS}")
    if scores.shape[1] < MIN_HEADS:
        return False, f"only {scores.shape[1]} head(s); a critical-difference diagram needs at least {MIN_HEADS}"
    statistic, p = friedman_test(scores)
    summary = f"Friedman chi2 = {statistic:.3g}, p = {p:.2g}"
    if p >= alpha:
        return False, (f"{summary} >= {alpha:g} over {len(scores)} blocks: no evidence that the heads differ, so "
                       "no critical-difference diagram (its post-hoc bars would be unfounded)")
    return True, f"{summary} < {alpha:g} over {len(scores)} blocks: the critical-difference diagram is warranted"


def pairwise_signed_rank_holm(scores: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Wilcoxon signed-rank test of every pair of heads over the blocks, Holm-adjusted (Benavoli et al. 2016).

    Parameters
    ----------
    scores : pandas.DataFrame
        Rows = independent blocks, columns = heads (>= 2), no NaN (:func:`independent_blocks`).
    alpha : float, default 0.05
        Family-wise level of ``significant``.

    Returns
    -------
    pandas.DataFrame
        One row per pair (``head_a``, ``head_b`` in column order): ``n_blocks``, ``mean_diff`` and
        ``median_diff`` (A minus B), ``n_a_better``, ``p`` (two-sided,
        :func:`~benchmark.analysis.stats.frequentist.wilcoxon_p`), ``p_holm`` (over all pairs) and
        ``significant`` (``p_holm < alpha``). With fewer than 6 non-zero differences a pair cannot reach
        p < .05 (the exact test's smallest p is ``2 / 2**n``).

    Examples
    --------
    >>> scores = pd.DataFrame({"a": [0.71, 0.62, 0.80, 0.55, 0.66, 0.74, 0.69],
    ...                        "b": [0.70, 0.60, 0.77, 0.54, 0.61, 0.70, 0.68],
    ...                        "c": [0.72, 0.59, 0.81, 0.57, 0.64, 0.75, 0.70]})
    >>> pairwise_signed_rank_holm(scores)[["head_a", "head_b", "n_a_better", "p", "p_holm"]].round(4)
      head_a head_b  n_a_better       p  p_holm
    0      a      b           7  0.0156  0.0469
    1      a      c           2  0.8750  0.8750
    2      b      c           1  0.0312  0.0625
    """
    # Hand-written loop over pairs; the tests themselves are scipy's Wilcoxon and statsmodels' Holm.
    table = _score_table(scores, min_heads=2)
    check_open_unit(alpha, "alpha")
    heads = list(table.columns)
    rows = []
    for i, head_a in enumerate(heads):
        for head_b in heads[i + 1 :]:
            diff = (table[head_a] - table[head_b]).to_numpy()
            rows.append({"head_a": head_a, "head_b": head_b, "n_blocks": diff.size, "mean_diff": diff.mean(),
                         "median_diff": float(np.median(diff)), "n_a_better": int((diff > 0).sum()),
                         "p": wilcoxon_p(diff)})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p"].to_numpy())
    out["significant"] = out["p_holm"] < alpha
    return out
