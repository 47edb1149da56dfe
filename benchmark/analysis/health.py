"""Health check of a grid: is any trained head clearly below the closed-form linear probe of its cells?

A head that ends below a ridge regression on the very features it starts from is under-trained (its
init, tuning or schedule failed it), whatever its loss; comparing it with other heads would measure the
recipe, not the loss. Per comparison group (pair_key) and head, over the splits where both the head and
the probe FINISHED (seeds averaged within a split first), with ``d_j`` = head − probe test SRCC:

* ``gap`` = mean(d_j); ``se`` = sd(d_j) / sqrt(J) (the plain standard error: a warning should fire
  readily, it is not a significance test);
* ``flagged`` when ``gap < -GAP_TOLERANCE`` and ``gap < -2 se``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.schema import metric_key

GAP_TOLERANCE = 0.02
"""SRCC a head may lose to the probe before it is flagged (with more than two standard errors)."""
HEALTH_COLUMNS = ["pair_key", "head", "n_splits", "mean_srcc", "probe_srcc", "gap", "se", "flagged"]


def _per_split(runs: pd.DataFrame) -> pd.Series:
    return runs.groupby(["pair_key", "head", "split"])[metric_key("srcc")].mean().dropna()


def health_check(results: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair_key, head) with the head's and the probe's mean test SRCC, the gap and the flag.

    Parameters
    ----------
    results : pandas.DataFrame
        FINISHED result runs (columns pair_key, head, split, test_srcc).
    probes : pandas.DataFrame
        FINISHED reference (probe) runs, same columns.

    Returns
    -------
    pandas.DataFrame
        Columns of ``HEALTH_COLUMNS``; empty when there is no probe run.

    Examples
    --------
    >>> runs = pd.DataFrame({"pair_key": "c", "head": ["mse"] * 3, "split": [0, 1, 2],
    ...                      "test_srcc": [0.50, 0.52, 0.48]})
    >>> probe = runs.assign(head="probe", test_srcc=[0.60, 0.61, 0.59])
    >>> row = health_check(runs, probe).iloc[0]
    >>> round(float(row["gap"]), 3), bool(row["flagged"])
    (-0.1, True)
    """
    if probes.empty or results.empty:
        return pd.DataFrame(columns=HEALTH_COLUMNS)
    probe = _per_split(probes).droplevel("head").rename("probe")
    heads = _per_split(results).rename("head_srcc").reset_index()
    both = heads.merge(probe.reset_index(), on=["pair_key", "split"])
    both["d"] = both["head_srcc"] - both["probe"]
    table = both.groupby(["pair_key", "head"], sort=False).agg(
        n_splits=("d", "size"), mean_srcc=("head_srcc", "mean"), probe_srcc=("probe", "mean"), gap=("d", "mean"),
        sd=("d", "std")).reset_index()
    table["se"] = table["sd"] / np.sqrt(table["n_splits"])
    table["flagged"] = (table["gap"] < -GAP_TOLERANCE) & (table["gap"] < -2 * table["se"].fillna(0.0))
    return table[HEALTH_COLUMNS]


def health_warnings(table: pd.DataFrame) -> list[str]:
    """One sentence per flagged head, for the report's warnings."""
    return [f"{row.pair_key} {row.head}: mean test SRCC {row.mean_srcc:.3f} is {-row.gap:.3f} below the linear "
            f"probe's {row.probe_srcc:.3f} (> {GAP_TOLERANCE} and > 2 SE = {2 * row.se:.3f} over {row.n_splits} "
            "splits): under-trained by its recipe (init, tuning budget, schedule)? Its comparisons measure the "
            "recipe, not the loss" for row in table[table["flagged"]].itertuples()]


__all__ = ["GAP_TOLERANCE", "HEALTH_COLUMNS", "health_check", "health_warnings"]
