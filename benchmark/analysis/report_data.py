"""Data of a grid report, read from the MLflow store (no retraining, no statistics).

* :func:`select_experiment` — the grid (experiment) to report on;
* :func:`load_runs` — every run as one tidy row, from one ``mlflow.search_runs`` call;
* :func:`usable_runs`, :func:`find_missing` — FINISHED runs used, expected runs without one;
* :func:`shown_splits`, :func:`split_runs`, :func:`load_predictions`, :func:`load_learning_curves` — the
  artifacts and metric histories read for a few runs only (one split per comparison group, chosen
  without looking at any test score).

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
    DIVERGED,
    FAILURE_TAG,
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
KEY_PARAMS = (*SIZE_PARAMS, "head.num_bins", "epochs", "rope")
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

    for tag in (*RUN_TAGS, FAILURE_TAG):
        out[tag] = column(f"tags.{tag}")
    out["role"] = out["role"].fillna(ROLE_RESULT)  # stores written before roles existed hold results only
    for param in KEY_PARAMS:
        out["num_bins" if param == "head.num_bins" else param] = pd.to_numeric(column(f"params.{param}"))
    for metric in [metric_key(m) for m in TEST_METRICS] + list(FIT_METRICS):
        out[metric] = pd.to_numeric(column(f"metrics.{metric}"))
    return out


CORRELATIONS = tuple(metric_key(m) for m in ("srcc", "krcc", "plcc", "plcc_raw"))
"""What a failed run scores: no better than chance (0) on every correlation."""


def usable_runs(runs: pd.DataFrame, warnings: list[str],
                role: str = ROLE_RESULT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the runs of one role into (all placeable runs, one usable run per cell and head).

    ``role="result"`` (default) gives what the statistics and tables use; ``role="reference"`` the
    linear-probe runs; tuning trials are never used. Usable: the latest FINISHED run of a (cell, head);
    where there is none, a run that failed by the head's own doing — a diverged model (FAILED, failure
    tag ``diverged:``) or constant predictions (FINISHED, correlations undefined) — counts as a
    ``failed`` run that scored 0 on every correlation, so an unstable head cannot look better by losing
    its bad splits. Other FAILED runs (exceptions, which may be the machine's) are missing, not failures.
    """
    runs = runs[runs["role"] == role]
    placeable = runs.dropna(subset=list(KEY_TAGS))
    if len(placeable) < len(runs):
        warn(warnings, f"{len(runs) - len(placeable)} run(s) lack one of the tags {', '.join(KEY_TAGS)} "
                       "and were ignored (not written by the harness?)")
    placeable = placeable.astype({"split": int, "seed": int})
    diverged = (placeable["status"] == "FAILED") & placeable[FAILURE_TAG].astype("string").fillna("").str.startswith(DIVERGED)
    candidates = placeable[(placeable["status"] == "FINISHED") | diverged].assign(
        failed=lambda t: (t["status"] != "FINISHED") | t[metric_key("srcc")].isna())
    candidates = candidates.sort_values(["failed", "start_time"], ascending=[False, True])
    duplicated = candidates[candidates["status"] == "FINISHED"].duplicated(RUN_KEYS, keep="last")
    if duplicated.any():
        warn(warnings, f"{int(duplicated.sum())} FINISHED {role} run(s) repeat a (cell, head); the latest of each "
                       "is used")
    usable = candidates.drop_duplicates(RUN_KEYS, keep="last").copy()
    usable.loc[usable["failed"], list(CORRELATIONS)] = 0.0
    failed = usable[usable["failed"]]
    if len(failed):
        counts = ", ".join(f"{head} {n}" for head, n in failed["head"].value_counts().items())
        warn(warnings, f"{len(failed)} {role} run(s) failed by their head (diverged or constant predictions: "
                       f"{counts}); they count as SRCC = PLCC = 0 in the comparisons, and the tables show the count")
    return placeable, usable.sort_values("start_time")


def find_missing(placeable: pd.DataFrame, finished: pd.DataFrame) -> pd.DataFrame:
    """Expected (cell, head) runs without a usable run (:func:`usable_runs`; failed-by-the-head runs are used).

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


def shown_splits(finished: pd.DataFrame) -> pd.Series:
    """Per pair_key, the split whose predictions the bootstrap CI and the scatter plot use: the lowest split
    where every head has a usable run (else the lowest split). A fixed rule, so the choice never depends
    on any head's test score."""
    complete = finished.groupby(["pair_key", "split"])["head"].nunique()
    heads = finished.groupby("pair_key")["head"].nunique()
    chosen = {}
    for pair_key, group in complete.groupby(level="pair_key"):
        full = group[group == heads[pair_key]]
        chosen[pair_key] = int((full if len(full) else group).index.get_level_values("split").min())
    return pd.Series(chosen, name="split", dtype=int)


def split_runs(finished: pd.DataFrame, splits: pd.Series) -> pd.DataFrame:
    """Each head's lowest-seed usable run at each pair_key's chosen split (``splits``: pair_key -> split)."""
    runs = finished.merge(splits.rename("split").rename_axis("pair_key").reset_index(), on=["pair_key", "split"])
    return runs.sort_values("seed", kind="stable").drop_duplicates(["pair_key", "head"])


def load_predictions(uri: str, finished: pd.DataFrame, splits: pd.Series,
                     warnings: list[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """``predictions.csv`` (image, mos, pred[, ref]) of the runs of :func:`split_runs`, keyed by (pair_key, head).

    A run whose file cannot be read or lacks a column is left out, with a warning.
    """
    out = {}
    with _tracking_uri(uri):
        for run in split_runs(finished[~finished["failed"]], splits).itertuples():
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


def load_learning_curves(client: MlflowClient, finished: pd.DataFrame, splits: pd.Series) -> pd.DataFrame:
    """val_srcc and train_loss histories of the lowest-seed runs at the chosen split of the first
    ``MAX_CURVE_CELLS`` pair keys (columns pair_key, head, metric, step, value)."""
    runs = split_runs(finished, splits.iloc[:MAX_CURVE_CELLS])
    rows = [(run.pair_key, run.head, key, m.step, m.value)
            for run in runs.itertuples() for key in ("val_srcc", "train_loss")
            for m in client.get_metric_history(run.run_id, key)]
    return pd.DataFrame(rows, columns=["pair_key", "head", "metric", "step", "value"])


__all__ = ["CELL_COLUMNS", "ReportError", "find_missing", "load_learning_curves", "load_predictions", "load_runs",
           "select_experiment", "shown_splits", "split_runs", "split_values", "usable_runs", "warn"]
