"""``dor-bench plan``: how many splits and seeds a grid needs, from a finished (pilot) grid's variance.

For every within-dataset cell and compared head pair of the pilot, the per-run SRCC differences give the
split and seed variance components (:func:`benchmark.analysis.stats.split_seed_variance`), and the grid
the ``r`` its population extrapolation assumes (:meth:`benchmark.schema.GridRecord.assumed_r`, as the
report uses it); :func:`benchmark.analysis.stats.design_table` turns them into the MDE80 of both targets and
the number of runs per head of a few (splits, seeds) designs. With a target MDE, the smallest number of
splits whose dataset test reaches it is found for each number of seeds (more splits always help it; the
population extrapolation's MDE cannot fall below ``2.80 sqrt(r var_split)`` whatever the design).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from benchmark.analysis import stats
from benchmark.analysis.comparisons import paired_runs
from benchmark.analysis.report_data import ASSUMED_R, ReportError, Scores, load_report_data
from benchmark.schema import COLUMNS
from benchmark.store import resolve_tracking_uri

TARGET_SEEDS = (1, 2, 3, 5)
"""Seeds per split for which ``--target-mde`` searches the number of splits."""
PLAN_COLUMNS = [COLUMNS.pair_key, "head_a", "head_b", "var_split", "var_seed", "r", "n_splits", "n_seeds", "runs_per_head",
                "mde80_dataset", "test", "mde80", "floor"]


def pilot_components(scores: Scores, compare: Sequence[tuple[str, str]], metric: str = "srcc") -> pd.DataFrame:
    """Per within-dataset cell and head pair: ``var_split, var_seed`` of the complete-case run differences.

    Pairs whose pilot has one seed per split (the two components cannot be told apart) or fewer than 2
    splits are left out.
    """
    rows = []
    for cell in scores.cells.itertuples():
        if cell.dataset != cell.test_dataset:
            continue
        for head_a, head_b in compare:
            paired = paired_runs(scores, cell.pair_key, head_a, head_b, metric)
            complete = paired[~(paired["failed_a"] | paired["failed_b"])]
            if complete[COLUMNS.split].nunique() < 2:
                continue
            components = stats.split_seed_variance(complete.assign(delta=complete["value_a"] - complete["value_b"]))
            if not math.isnan(components.var_seed):
                rows.append({COLUMNS.pair_key: cell.pair_key, "head_a": head_a, "head_b": head_b,
                             "var_split": components.var_split, "var_seed": components.var_seed})
    return pd.DataFrame(rows, columns=[COLUMNS.pair_key, "head_a", "head_b", "var_split", "var_seed"])


SPLIT_STEPS = (3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000)
"""Numbers of splits the target search tries."""


def splits_for_target(components: stats.VarianceComponents, n_seeds: int, target: float) -> int | None:
    """The fewest splits J of :data:`SPLIT_STEPS` whose dataset test (the paired t-test on split means) has
    80 % power at ``target``; None if none does."""
    sd = components.sd(n_seeds)
    return next((j for j in SPLIT_STEPS if stats.mde80(sd, j, 0.0) <= target), None)


def design_plan(grid: str | None, tracking_uri: str | None, target_mde: float | None = None,
                designs: Sequence[tuple[int, int]] = stats.DEFAULT_DESIGNS) -> pd.DataFrame:
    """The designs of ``dor-bench plan`` for every within-dataset cell and pair of a finished grid.

    Returns
    -------
    pandas.DataFrame
        :data:`PLAN_COLUMNS`: one row per (cell, pair, design); with ``target_mde`` also the fewest splits
        reaching it for each of :data:`TARGET_SEEDS` (``n_splits`` NaN where no number of splits
        in :data:`SPLIT_STEPS` does).

    Raises
    ------
    ReportError
        When the grid has no usable runs or no pair with two or more seeds per split.
    """
    data = load_report_data(resolve_tracking_uri(tracking_uri), grid, [])
    name, record = data.name, data.record
    pilot = pilot_components(data.scores, record.compare)
    if pilot.empty:
        raise ReportError(f"grid {name!r} has no within-dataset pair with two or more seeds in a split: split and "
                          "seed variance cannot be told apart. Run a pilot with seeds: [0, 1].")
    sizes = data.sizes
    rows = []
    for pair in pilot.itertuples(index=False):
        components = stats.VarianceComponents(pair.var_split, pair.var_seed)
        ratio = sizes.loc[pair.pair_key, ASSUMED_R]
        chosen = list(designs)
        if target_mde is not None:
            found = {s: splits_for_target(components, s, target_mde) for s in TARGET_SEEDS}
            chosen = [(j, s) for s, j in found.items() if j is not None]
            rows += [{**pair._asdict(), "r": ratio, "n_seeds": s, "test": f"MDE80 <= {target_mde:g} out of reach"}
                     for s, j in found.items() if j is None]
        if chosen:
            table = stats.design_table(components, ratio, chosen)
            rows += [{**pair._asdict(), "r": ratio, **design} for design in table.to_dict("records")]
    return pd.DataFrame(rows, columns=PLAN_COLUMNS).astype({"n_splits": "Int64", "n_seeds": "Int64",
                                                            "runs_per_head": "Int64"})


__all__ = ["PLAN_COLUMNS", "SPLIT_STEPS", "TARGET_SEEDS", "design_plan", "pilot_components", "splits_for_target"]
