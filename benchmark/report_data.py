"""Data of a grid report, read from the MLflow store (no retraining, no statistics).

* :func:`select_experiment` — the grid (experiment) to report on;
* :func:`load_runs` — every run as one tidy row, from one ``mlflow.search_runs`` call;
* :func:`usable_runs`, :func:`find_missing` — FINISHED runs used, expected runs without one;
* :func:`median_splits`, :func:`median_runs`, :func:`load_predictions`,
  :func:`load_learning_curves` — the artifacts and metric histories read for a few runs only (the
  median split of each comparison group).

Problems that leave part of the report out are appended to the caller's ``warnings`` list (and
logged) by :func:`warn`; problems that leave nothing to report raise :class:`ReportError`.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark.schema import (
    FIT_METRICS,
    PREDICTIONS_ARTIFACT,
    ROLE_RESULT,
    RUN_TAGS,
    SIZE_PARAMS,
    TEST_METRICS,
    metric_key,
)

log = logging.getLogger(__name__)

KEY_TAGS = ("pair_key", "head", "split", "seed", "backbone", "dataset", "test_dataset", "regime")
"""Tags without which a run cannot be placed in the grid."""
KEY_PARAMS = (*SIZE_PARAMS, "head.num_bins", "epochs")
CELL_COLUMNS = ["pair_key", "backbone", "dataset", "test_dataset", "regime"]
RUN_KEYS = ["pair_key", "split", "seed", "head"]
"""One FINISHED run per combination is used."""
MAX_CURVE_CELLS = 4
"""Comparison groups shown in the learning-curve plot (their metric histories are fetched one by one)."""
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class ReportError(ValueError):
    """The report cannot be built from this store (unknown grid, no usable runs, bad option)."""


def warn(warnings: list[str], message: str) -> None:
    """Append ``message`` to ``warnings`` (once) and log it."""
    if message not in warnings:
        warnings.append(message)
        log.warning(message)


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """Point the fluent MLflow API at ``uri`` and silence its per-download progress bars; restore both."""
    previous, bar = mlflow.get_tracking_uri(), os.environ.get(_PROGRESS_BAR_ENV)
    mlflow.set_tracking_uri(uri)
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if bar is None:
            os.environ.pop(_PROGRESS_BAR_ENV, None)
        else:
            os.environ[_PROGRESS_BAR_ENV] = bar


def select_experiment(client: MlflowClient, grid: str | None) -> tuple[str, str]:
    """(grid name, experiment id); ``grid=None`` picks the only non-empty experiment of the store.

    Raises
    ------
    ReportError
        When ``grid`` is not in the store, or ``grid=None`` and the store holds other than one grid
        (the message lists the grids present).
    """
    experiments = [e for e in client.search_experiments()
                   if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)]
    names = sorted(e.name for e in experiments)
    if grid is None:
        if len(experiments) != 1:
            raise ReportError(f"the store holds {len(experiments)} grids ({', '.join(names) or 'none'}); "
                              "name one with --grid.")
        return experiments[0].name, experiments[0].experiment_id
    match = [e for e in experiments if e.name == grid]
    if not match:
        raise ReportError(f"grid {grid!r} not found in the store; grids present: {', '.join(names) or 'none'}. "
                          "Check --grid and --tracking-uri.")
    return grid, match[0].experiment_id


def load_runs(uri: str, experiment_id: str) -> pd.DataFrame:
    """Every active run of an experiment as one tidy row (one ``mlflow.search_runs`` call).

    Returns
    -------
    pandas.DataFrame
        Columns ``run_id, status, start_time, artifact_uri``, the tags of ``RUN_TAGS``, the params of
        ``KEY_PARAMS`` (numeric; ``num_bins`` for ``head.num_bins``), ``test_<metric>`` for every test
        metric and ``best_epoch, best_val_srcc, train_seconds``.
    """
    with _tracking_uri(uri):
        raw = mlflow.search_runs(experiment_ids=[experiment_id])
    if raw.empty:
        return pd.DataFrame(columns=["run_id", "status", "start_time", "artifact_uri", *RUN_TAGS])
    out = raw[["run_id", "status", "start_time", "artifact_uri"]].copy()

    def column(name: str) -> pd.Series:
        return raw[name] if name in raw else pd.Series(np.nan, index=raw.index)

    for tag in RUN_TAGS:
        out[tag] = column(f"tags.{tag}")
    out["role"] = out["role"].fillna(ROLE_RESULT)  # stores written before roles existed hold results only
    for param in KEY_PARAMS:
        out["num_bins" if param == "head.num_bins" else param] = pd.to_numeric(column(f"params.{param}"))
    for metric in [metric_key(m) for m in TEST_METRICS] + list(FIT_METRICS):
        out[metric] = pd.to_numeric(column(f"metrics.{metric}"))
    return out


def usable_runs(runs: pd.DataFrame, warnings: list[str],
                role: str = ROLE_RESULT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the runs of one role into (all placeable runs, FINISHED runs with one run per cell and head).

    ``role="result"`` (default) gives what the statistics and tables use; ``role="reference"`` the
    linear-probe runs; tuning trials are never used.
    """
    runs = runs[runs["role"] == role]
    placeable = runs.dropna(subset=list(KEY_TAGS))
    if len(placeable) < len(runs):
        warn(warnings, f"{len(runs) - len(placeable)} run(s) lack one of the tags {', '.join(KEY_TAGS)} "
                       "and were ignored (not written by the harness?)")
    placeable = placeable.astype({"split": int, "seed": int})
    finished = placeable[placeable["status"] == "FINISHED"].sort_values("start_time")
    duplicated = finished.duplicated(RUN_KEYS, keep="last")
    if duplicated.any():
        warn(warnings, f"{int(duplicated.sum())} FINISHED {role} run(s) repeat a (cell, head); the latest of each "
                       "is used")
    return placeable, finished[~duplicated]


def find_missing(placeable: pd.DataFrame, finished: pd.DataFrame) -> pd.DataFrame:
    """Expected (cell, head) runs without a FINISHED run.

    The grid is taken as the product of the pair keys, splits, seeds and heads seen in any run; a
    run that is FAILED/RUNNING/KILLED is reported with its status, one that never started as ``absent``.
    """
    cells = placeable.drop_duplicates("pair_key")[CELL_COLUMNS]
    grid = pd.MultiIndex.from_product(
        [cells["pair_key"], sorted(placeable["split"].unique()), sorted(placeable["seed"].unique()),
         list(dict.fromkeys(placeable["head"]))], names=RUN_KEYS).to_frame(index=False)
    done = finished[RUN_KEYS].assign(_done=True)
    unfinished = placeable[placeable["status"] != "FINISHED"].sort_values("start_time")
    unfinished = unfinished.drop_duplicates(RUN_KEYS, keep="last")
    missing = grid.merge(done, on=RUN_KEYS, how="left")
    missing = missing[missing["_done"].isna()].drop(columns="_done")
    missing = missing.merge(unfinished[[*RUN_KEYS, "status"]], on=RUN_KEYS, how="left").fillna({"status": "absent"})
    missing = missing.merge(cells, on="pair_key")
    missing["cell_key"] = (missing["pair_key"] + "|split" + missing["split"].astype(str)
                           + "|seed" + missing["seed"].astype(str))
    return missing[[*CELL_COLUMNS, "split", "seed", "head", "status", "cell_key"]].reset_index(drop=True)


def split_values(finished: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Test metric per (pair_key, split, seed) row and head column."""
    return finished.set_index(RUN_KEYS)[metric_key(metric)].unstack("head")


def median_splits(finished: pd.DataFrame, anchor: str) -> pd.Series:
    """Per pair_key, the split whose ``anchor``-head SRCC is the (lower) median over the splits where
    every head FINISHED (all splits where the anchor FINISHED when none is complete)."""
    values = split_values(finished, "srcc").groupby(["pair_key", "split"]).mean()
    chosen = {}
    for pair_key, group in values.groupby(level="pair_key"):
        complete = group.dropna()
        candidates = (complete if len(complete) else group.dropna(subset=[anchor]))[anchor].sort_values(kind="stable")
        if len(candidates):
            chosen[pair_key] = int(candidates.index[(len(candidates) - 1) // 2][1])
    return pd.Series(chosen, name="split", dtype=int)


def median_runs(finished: pd.DataFrame, medians: pd.Series) -> pd.DataFrame:
    """Each head's lowest-seed FINISHED run at each pair_key's median split (``medians``: pair_key -> split)."""
    runs = finished.merge(medians.rename("split").rename_axis("pair_key").reset_index(), on=["pair_key", "split"])
    return runs.sort_values("seed", kind="stable").drop_duplicates(["pair_key", "head"])


def load_predictions(uri: str, finished: pd.DataFrame, medians: pd.Series,
                     warnings: list[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """``predictions.csv`` (image, mos, pred) of the runs of :func:`median_runs`, keyed by (pair_key, head).

    A run whose file cannot be read or lacks a column is left out, with a warning.
    """
    out = {}
    with _tracking_uri(uri):
        for run in median_runs(finished, medians).itertuples():
            try:
                text = mlflow.artifacts.load_text(f"{run.artifact_uri}/{PREDICTIONS_ARTIFACT}")
                frame = pd.read_csv(io.StringIO(text))
            except (MlflowException, OSError, pd.errors.ParserError) as err:
                warn(warnings, f"run {run.run_id} ({run.pair_key}, {run.head}): cannot read {PREDICTIONS_ARTIFACT} "
                               f"({err}); its bootstrap CI and scatter panel are left out")
                continue
            if not {"image", "mos", "pred"} <= set(frame.columns):
                warn(warnings, f"run {run.run_id}: {PREDICTIONS_ARTIFACT} lacks the columns image, mos, pred "
                               f"(has {', '.join(frame.columns)}); its bootstrap CI and scatter panel are left out")
                continue
            out[(run.pair_key, run.head)] = frame
    return out


def load_learning_curves(client: MlflowClient, finished: pd.DataFrame, medians: pd.Series) -> pd.DataFrame:
    """val_srcc and train_loss histories of the lowest-seed runs at the median split of the first
    ``MAX_CURVE_CELLS`` pair keys (columns pair_key, head, metric, step, value)."""
    runs = median_runs(finished, medians.iloc[:MAX_CURVE_CELLS])
    rows = [(run.pair_key, run.head, key, m.step, m.value)
            for run in runs.itertuples() for key in ("val_srcc", "train_loss")
            for m in client.get_metric_history(run.run_id, key)]
    return pd.DataFrame(rows, columns=["pair_key", "head", "metric", "step", "value"])


__all__ = ["CELL_COLUMNS", "ReportError", "find_missing", "load_learning_curves", "load_predictions", "load_runs",
           "median_runs", "median_splits", "select_experiment", "split_values", "usable_runs", "warn"]
