"""Health check of a grid: is any trained head below the linear probe, or tuned on the edge of its budget?

**Below the probe.** A head that ends below a ridge regression on the very features it starts from is
under-trained (its init, tuning or schedule failed it), whatever its loss; comparing it with other heads
would measure the recipe, not the loss. Per comparison group (pair_key) and head, over the splits where
both the head and the probe have a score (seeds averaged within a split), with ``d_j`` = head − probe
test SRCC: ``gap`` = mean(d_j); ``se`` = sd(d_j) / sqrt(J) (the plain standard error: a warning should
fire readily, it is not a significance test); ``below_probe`` when ``gap < -GAP_TOLERANCE`` and
``gap < -2 se``.

**On the edge of the tuning budget.** Every head's trials are chosen on val SRCC; a budget is fair only if
it brackets each head's optimum. Per pair_key, head and tuned setting: how often the selected value is
the smallest or largest of the grid's values (``edge_rate``), the head's val SRCC at each value averaged
over its cells (``profile``), the value where that mean peaks (``peak``) and, when it peaks at an edge,
how much the edge beats the best value inside the budget, paired over the cells (``edge_gain`` ±
``edge_gain_se``). ``tuning_edge`` when the selection sits on an edge in more than ``EDGE_RATE`` of the cells
AND the edge beats every inner value by more than two standard errors and ``EDGE_TOLERANCE``: val SRCC
still rises at the edge. Selections on an edge alone are not
evidence: with a flat profile, val noise puts 2/3 of them on an edge of a three-value budget (2/5 of a
five-value one), and the head's test score would be the same whichever value won; a head whose val SRCC
still rises at the edge may have its optimum outside the budget.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.analysis.report_data import ReportData, Scores, warn
from benchmark.schema import COLUMNS, TUNED_PREFIX, test_metric

GAP_TOLERANCE = 0.02
"""SRCC a head may lose to the probe before it is flagged (with more than two standard errors)."""
EDGE_RATE = 1 / 3
"""Share of cells whose selection may sit on an edge of the tuning budget before the profile is checked."""
EDGE_TOLERANCE = 0.01
"""Val SRCC an edge of the budget may gain over the best inner value before it is read as a rising profile."""
HEALTH_COLUMNS = [COLUMNS.pair_key, COLUMNS.head, "n_splits", "mean_srcc", "probe_srcc", "gap", "se", "below_probe"]
TUNING_COLUMNS = [COLUMNS.pair_key, COLUMNS.head, "setting", "values", "selected", "edge_rate", "profile", "peak",
                  "edge_gain",
                  "edge_gain_se", "tuning_edge"]


def probe_gaps(results: Scores, probes: Scores) -> pd.DataFrame:
    """One row per (pair_key, head): the head's and the probe's mean test SRCC, the gap and the flag.

    Examples
    --------
    >>> runs = pd.DataFrame({"pair_key": "c", "head": ["mse"] * 3, "split": [0, 1, 2],
    ...                      "test_srcc": [0.50, 0.52, 0.48]})
    >>> probe = runs.assign(head="probe", test_srcc=[0.60, 0.61, 0.59])
    >>> row = probe_gaps(Scores(runs, runs), Scores(probe, probe)).iloc[0]
    >>> round(float(row["gap"]), 3), bool(row["below_probe"])
    (-0.1, True)
    """
    if probes.per_split.empty or results.per_split.empty:
        return pd.DataFrame(columns=HEALTH_COLUMNS)
    srcc = test_metric("srcc")
    probe = probes.per_split[[COLUMNS.pair_key, COLUMNS.split, srcc]].rename(columns={srcc: "probe"})
    heads = results.per_split[[COLUMNS.pair_key, COLUMNS.head, COLUMNS.split, srcc]].rename(columns={srcc: "head_srcc"})
    both = heads.merge(probe, on=[COLUMNS.pair_key, COLUMNS.split]).dropna(subset=["head_srcc", "probe"])
    both["d"] = both["head_srcc"] - both["probe"]
    table = both.groupby([COLUMNS.pair_key, COLUMNS.head], sort=False).agg(
        n_splits=("d", "size"), mean_srcc=("head_srcc", "mean"), probe_srcc=("probe", "mean"), gap=("d", "mean"),
        sd=("d", "std")).reset_index()
    table["se"] = table["sd"] / np.sqrt(table["n_splits"])
    table["below_probe"] = (table["gap"] < -GAP_TOLERANCE) & (table["gap"] < -2 * table["se"].fillna(0.0))
    return table[HEALTH_COLUMNS]


def tuning_diagnostics(data: ReportData) -> pd.DataFrame:
    """One row per (pair_key, head, tuned setting) of a grid with a tuning budget (else empty).

    Reads the grid's ``tuning`` values, the usable result runs (``tuned.<setting>``: the selected value) and
    their trials (:attr:`ReportData.trials`: ``tuned.<setting>`` and ``best_val_srcc`` of each).

    Returns
    -------
    pandas.DataFrame
        Columns of ``TUNING_COLUMNS``: ``values`` and ``selected`` as text (``0.0003:2 0.001:5 0.003:3``: how
        many cells selected each value), ``profile`` the mean val SRCC per value (same order), ``peak`` the
        value where it is highest, the rest as in the module docstring (``edge_gain`` NaN when the peak is
        inside the budget).
    """
    results, trials = data.usable, data.trials
    rows = []
    for setting, values in data.record.tuning.items():
        column = f"{TUNED_PREFIX}{setting}"
        if len(values) < 2 or column not in results or results.empty:
            continue
        ordered = sorted(values)
        for (pair_key, head), group in results.groupby([COLUMNS.pair_key, COLUMNS.head], sort=False):
            chosen = group[column].dropna()
            mine = trials[(trials[COLUMNS.pair_key] == pair_key) & (trials[COLUMNS.head] == head)] if len(trials) else trials
            per_cell = (mine.groupby([COLUMNS.split, COLUMNS.seed, column])[COLUMNS.best_val_srcc].mean().unstack(column)
                        .reindex(columns=ordered) if len(mine) else pd.DataFrame(columns=ordered))
            profile = per_cell.mean()
            peak = float(profile.idxmax()) if profile.notna().any() else math.nan
            gain = se = math.nan
            if peak in (ordered[0], ordered[-1]):
                others = ordered[1:-1] or [v for v in ordered if v != peak]  # a two-value budget: the other value
                inner = profile[others].idxmax()
                d = (per_cell[peak] - per_cell[inner]).dropna()
                gain, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else math.nan
            edge_rate = float(chosen.isin((ordered[0], ordered[-1])).mean()) if len(chosen) else math.nan
            rows.append({COLUMNS.pair_key: pair_key, COLUMNS.head: head, "setting": setting,
                         "values": " ".join(f"{v:g}" for v in values),
                         "selected": " ".join(f"{v:g}:{int((chosen == v).sum())}" for v in values),
                         "edge_rate": edge_rate, "profile": " ".join(f"{profile[v]:.4f}" for v in values),
                         "peak": peak, "edge_gain": gain, "edge_gain_se": se,
                         "tuning_edge": bool(edge_rate > EDGE_RATE and gain > max(2 * se, EDGE_TOLERANCE))})
    return pd.DataFrame(rows, columns=TUNING_COLUMNS)


def health_check(data: ReportData, warnings: list[str]) -> pd.DataFrame:
    """``health.csv``: :func:`probe_gaps` with :func:`tuning_diagnostics` (one row per pair_key, head and tuned
    setting); each flagged head is appended to ``warnings`` (:func:`health_warnings`)."""
    tuning = tuning_diagnostics(data)
    gaps = probe_gaps(data.scores, data.probes)
    for message in health_warnings(gaps, tuning):
        warn(warnings, message)
    return gaps.merge(tuning, on=[COLUMNS.pair_key, COLUMNS.head], how="outer") if len(tuning) else gaps


def health_warnings(gaps: pd.DataFrame, tuning: pd.DataFrame) -> list[str]:
    """One sentence per flagged head, for the report's warnings."""
    below = [f"{row.pair_key} {row.head}: mean test SRCC {row.mean_srcc:.3f} is {-row.gap:.3f} below the linear "
             f"probe's {row.probe_srcc:.3f} (> {GAP_TOLERANCE} and > 2 SE = {2 * row.se:.3f} over {row.n_splits} "
             "splits): under-trained by its recipe (init, tuning budget, schedule)? Its comparisons measure the "
             "recipe, not the loss" for row in gaps[gaps["below_probe"]].itertuples()]
    edge = [f"{row.pair_key} {row.head}: the selected {row.setting} sits on an edge of the tuning budget in "
            f"{row.edge_rate:.0%} of the cells ({row.selected}) and its val SRCC still rises towards {row.peak:g} "
            f"(+{row.edge_gain:.3f} ± {row.edge_gain_se:.3f} over the best inner value): the budget may not bracket this "
            "head's optimum: widen `tuning:`"
            for row in tuning[tuning["tuning_edge"]].itertuples()]
    return below + edge


__all__ = ["EDGE_RATE", "EDGE_TOLERANCE", "GAP_TOLERANCE", "HEALTH_COLUMNS", "TUNING_COLUMNS", "health_check",
           "health_warnings", "probe_gaps", "tuning_diagnostics"]
