"""Calibration on the suite's own harness: null grids through the real cells and report code.

``python -m scripts.calibration`` simulates ridge regressions; the suite itself splits 60/20/20 by reference, trains
with seeded init, dropout, AdamW and early stopping, and tests the per-split differences. This script
checks the tests on that protocol. Each null grid is the default grid's recipe on one backbone (frozen,
offline ImageNet weights, ``bundled``, prior init), J splits with fresh split seeds (grid g uses splits
g·J … g·J + J − 1, so every grid has its own train/test partitions), two seeds per split, and two heads of
the same type and hyper-parameters that differ only in their head seed (``dor`` and ``dor-twin``). Every
cell runs through :class:`benchmark.run.cell.CellRun` into one SQLite store.

Two heads that differ only in their head seed are not a usable null: ``init_prior`` zeroes the output
layer and sets its bias from the data, so the head seed has no effect left, and the twins train to the
same weights (``twins_identical`` counts the cells where their test SRCC is exactly equal). The null is
therefore one head against itself trained under the other seed of the same split — ``dor`` at seed 0 vs
``dor`` at seed 1: another trunk init, sample order and dropout stream, i.e. all of the training noise a
grid has, and exactly no true difference. Each grid's per-split differences are tested with the report's
own :func:`benchmark.analysis.comparisons.paired_deltas` and :func:`benchmark.analysis.comparisons.cell_stats`.

What this null can and cannot show: the two "heads" are one head, so the split x head term (how the
training and test composition of a split moves one head against another) cancels exactly, and the d_j
are i.i.d. seed noise. It checks the tests on the suite's real training noise (early stopping, tuning,
dropout, sample order); it cannot check the overlap correction (any r passes it). The split term is
covered by the structured simulation (:mod:`scripts.calibration.structured`) and, for the dataset target, on
real runs by :mod:`scripts.calibration.livec`.

Under this null, a calibrated test rejects in a fraction α of the grids, and the Bayesian test calls "a
better" or "b better" in at most 5 % of them. Known effects are then added to the measured per-split
differences (real training and split noise, an exact shift δ) to give the power of the corrected test and
the verdict rates at δ = ROPE/2 (inside the ROPE) and δ = 2, 3, 5 ROPE. ``variance`` gives the split and
seed variance of one head's test SRCC (one-way ANOVA over the two seeds of each split).

Usage::

    python -m scripts.calibration.harness --out results/calibration-harness --grids 100 --splits 10 --seeds 2

Writes ``grids.csv`` (one row per grid: the report's statistics of dor − dor-twin), ``effects.csv`` and
``summary.json``, plus ``provenance.json``, into ``--out``; the runs go to ``--tracking-uri`` (default
``mlruns/calibration-harness.db``), so an interrupted call resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmark.analysis.comparisons import cell_stats, paired_deltas  # noqa: E402  (after the telemetry switch)
from benchmark.config import load_grid, parse_grid  # noqa: E402
from benchmark.run.grid import execute, plan_grid  # noqa: E402
from benchmark.provenance import write_provenance  # noqa: E402
from benchmark.analysis.report_data import Scores, cell_sizes, load_runs, usable_runs  # noqa: E402
from benchmark.store import open_client  # noqa: E402
from benchmark.schema import COLUMNS, PROBE_HEAD, GridRecord  # noqa: E402
from benchmark.analysis.stats import (  # noqa: E402
    DATASET,
    POPULATION,
    bayesian_correlated_ttest,
    corrected_resampled_ttest,
    split_seed_variance,
    verdict,
    wilcoxon_p,
)

from .common import wilson_interval  # noqa: E402

HEADS = ("dor", "dor-twin")
NULL_PAIR = ("dor@seed0", "dor@seed1")
ALPHA = 0.05


def null_grid(backbone: str, n_grids: int, n_splits: int, n_seeds: int) -> dict:
    """The default grid's recipe with two identical heads and ``n_grids * n_splits`` split seeds."""
    default = load_grid()
    data = {
        "name": "calibration-harness", "regime": "frozen", "backbones": {backbone: {"pretrained": True}},
        "heads": {"dor": {"num_bins": 28}, "dor-twin": {"type": "dor", "num_bins": 28}},
        "datasets": ["bundled"], "splits": n_grids * n_splits, "seeds": list(range(n_seeds)),
        "epochs": default.training.epochs, "batch_size": default.training.batch_size,
        "early_stopping": {"patience": default.training.patience},
        "optimizer": {"name": default.training.optimizer, "lr": default.training.lr,
                      "weight_decay": default.training.weight_decay},
        "frozen": {"hidden": default.hidden, "dropout": default.dropout}, "rope": default.rope,
    }
    return data


def seed_pairs(finished: pd.DataFrame) -> pd.DataFrame:
    """``dor`` runs relabelled as two heads, one per seed (``dor@seed0``, ``dor@seed1``), paired by split."""
    runs = finished[finished[COLUMNS.head] == HEADS[0]]
    return runs.assign(head="dor@seed" + runs[COLUMNS.seed].astype(str), seed=0)


def grid_statistics(null_runs: pd.DataFrame, n_splits: int, record: GridRecord) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The report's statistics of dor@seed0 − dor@seed1 for every null grid (splits g·J … g·J + J − 1), and the
    per-split differences: the population row, with the dataset row's p (the paired t-test on split means)."""
    rows, frames = [], []
    for g, runs in null_runs.groupby(null_runs[COLUMNS.split] // n_splits):
        runs = runs.assign(pair_key=f"grid{g}")
        scores = Scores.of(runs)
        deltas = paired_deltas(scores, [NULL_PAIR], ["srcc"])
        by_target = cell_stats(scores, deltas, cell_sizes(runs, record), [], record).query("metric == 'srcc'").set_index("target")
        row = by_target.loc[POPULATION].to_dict()
        row.update(grid=g, p_dataset=by_target.loc[DATASET, "p"], p_wilcoxon_splits=wilcoxon_p(deltas["delta"]))
        rows.append(row)
        frames.append(deltas)
    return pd.DataFrame(rows), pd.concat(frames, ignore_index=True)


def effect_rates(grids: pd.DataFrame, deltas: pd.DataFrame, n_splits: int, rope: float,
                 shifts: tuple[float, ...]) -> pd.DataFrame:
    """Rejection and verdict rates when a known shift is added to the measured per-split differences."""
    rows = []
    sizes = grids.set_index("grid")[[COLUMNS.n_train, COLUMNS.n_test]]
    for shift in shifts:
        rejected, verdicts = [], []
        for g, group in deltas.groupby(deltas[COLUMNS.split] // n_splits):
            d = group.sort_values(COLUMNS.split)["delta"].to_numpy() + shift
            n_train, n_test = sizes.loc[g]
            rejected.append(corrected_resampled_ttest(d, n_train, n_test)[1] < ALPHA)
            verdicts.append(verdict(*bayesian_correlated_ttest(d, n_train, n_test, rope)))
        verdicts = pd.Series(verdicts)
        rows.append({"shift": shift, "shift_in_ropes": shift / rope, "n_grids": len(rejected),
                     "corrected_t_rejects": float(np.mean(rejected)),
                     **{f"verdict_{v.replace(' ', '_')}": float((verdicts == v).mean())
                        for v in ("a better", "b better", "equivalent", "undecided")}})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.calibration.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/calibration-harness"))
    parser.add_argument("--grids", type=int, default=100, help="null grids")
    parser.add_argument("--splits", type=int, default=10, help="splits J per grid")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per split (>= 2 separates seed noise)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/calibration-harness.db",
                        help="the store of the null grids' runs (kept out of --out; resumable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri
    start = time.perf_counter()
    grid = parse_grid(null_grid(args.backbone, args.grids, args.splits, args.seeds), "calibration-harness")
    plan = plan_grid(grid, uri)
    plan.todo = {cell: heads - {PROBE_HEAD} for cell, heads in plan.todo.items() if heads - {PROBE_HEAD}}
    execute(plan, workers=args.workers)
    train_s = time.perf_counter() - start

    finished = usable_runs(load_runs(open_client(uri), plan.experiment_id), [])
    twins = finished.pivot_table(index=[COLUMNS.split, COLUMNS.seed], columns=COLUMNS.head, values=COLUMNS.test_srcc)
    grids, deltas = grid_statistics(seed_pairs(finished), args.splits, grid.record())
    one_head = finished[finished[COLUMNS.head] == HEADS[0]].rename(columns={COLUMNS.test_srcc: "srcc"})
    components = split_seed_variance(one_head, value="srcc")
    shifts = (0.0, grid.rope / 2, 2 * grid.rope, 3 * grid.rope, 5 * grid.rope)
    effects = effect_rates(grids, deltas, args.splits, grid.rope, shifts)
    grids.to_csv(args.out / "grids.csv", index=False)
    effects.to_csv(args.out / "effects.csv", index=False)
    n = len(grids)
    counts = {
        "corrected_t": int((grids["p_corrected"] < ALPHA).sum()),
        "dataset_paired_t": int((grids["p_dataset"] < ALPHA).sum()),
        "wilcoxon_splits": int((grids["p_wilcoxon_splits"] < ALPHA).sum()),
        "verdict_a_or_b_better": int(grids["verdict"].isin(["a better", "b better"]).sum()),
        "verdict_equivalent": int((grids["verdict"] == "equivalent").sum()),
    }
    summary = {
        "n_grids": n, "n_splits": args.splits, "n_seeds": args.seeds, "backbone": args.backbone,
        "null": "dor at seed 0 vs dor at seed 1, paired by split",
        "twins_identical": {"cells": int((twins[HEADS[0]] == twins[HEADS[1]]).sum()), "of": len(twins)},
        "rope": grid.rope, "alpha": ALPHA, "train_seconds": round(train_s, 1),
        "rates": {name: {"rate": k / n, "wilson95": wilson_interval(k, n)} for name, k in counts.items()},
        "variance": {"one_head_var_split": components.var_split, "one_head_var_seed": components.var_seed,
                     "null_sd_delta_mean": float(grids["std_delta"].mean()),
                     "null_mde80_median": float(grids["mde80"].median()),
                     "n_test_over_n_train": float((grids[COLUMNS.n_test] / grids[COLUMNS.n_train]).mean())},
        "effects": effects.to_dict("records"),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_provenance(args.out, [sys.executable, "-m", "scripts.calibration.harness", *sys.argv[1:]],
                     duration_s=round(time.perf_counter() - start, 1), n_grids=n)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
