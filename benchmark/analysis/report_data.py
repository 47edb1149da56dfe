"""Data of a grid report, read from the MLflow store through :class:`benchmark.schema.RunRecord` (no statistics).

* :class:`ReportData` — THE contract of a report: the grid's record, its runs and every view of them (usable
  runs, :class:`Scores`, trials, missing units, set sizes), each computed once; every consumer takes it;
* :func:`load_report_data` — a grid's :class:`ReportData`, loaded once from the store;
* :func:`select_experiment`, :func:`load_grid_record` — the grid (experiment) to report on, as it was run;
* :func:`load_runs` — every run as one tidy row (:meth:`RunRecord.as_row`), from one search;
* :func:`usable_runs` — one run per expected (cell, head): FINISHED, else the failure that stands for it;
* :class:`Scores` — the per-run and seed-averaged per-split tables every statistic, table and plot reads;
* :func:`find_missing` — the grid's expected units without a usable run;
* :func:`shown_splits`, :func:`load_predictions`, :func:`load_learning_curves` — artifacts and metric
  histories of a few runs only (one split per comparison group, chosen without looking at any score).

Problems that leave part of the report out are appended to the caller's ``warnings`` list (and logged) by
:func:`warn`; problems that leave nothing to report raise :class:`ReportError`. The analysis package reads
the store only through the client of :func:`benchmark.store.open_client` and needs neither torch nor the
harness.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark.metrics import METRIC_NAMES
from benchmark.store import all_runs, open_client
from benchmark.schema import (
    BLANK_ROW_COLUMNS,
    COLUMNS,
    CURVES,
    FAILED,
    FINISHED,
    GRID_TAG,
    PREDICTION_COLUMNS,
    PREDICTIONS_ARTIFACT,
    PROBE_HEAD,
    ROLE_REFERENCE,
    ROLE_RESULT,
    ROLE_TRIAL,
    TAGS,
    TUNED_PREFIX,
    GridRecord,
    RunRecord,
    test_metric,
    trial_values,
)

log = logging.getLogger(__name__)

CELL_COLUMNS = [COLUMNS.pair_key, COLUMNS.backbone, COLUMNS.dataset, COLUMNS.test_dataset, COLUMNS.regime]
RUN_KEYS = [COLUMNS.pair_key, COLUMNS.split, COLUMNS.seed, COLUMNS.head]
"""One usable run per combination."""
TEST_COLUMNS = tuple(test_metric(m) for m in METRIC_NAMES)
"""The final test metrics of every result and probe run."""
MAX_CURVE_CELLS = 4
ASSUMED_R = "assumed_r"
"""Column of :func:`cell_sizes`: the split correlation r a cell's population test assumes."""
"""Comparison groups shown in the learning-curve plot (their metric histories are fetched one by one)."""


class ReportError(ValueError):
    """The report cannot be built from this store (unknown grid, no usable runs, bad option)."""


def warn(warnings: list[str], message: str) -> None:
    """Append ``message`` to ``warnings`` (once) and log it."""
    if message not in warnings:
        warnings.append(message)
        log.warning(message)


def select_experiment(client: MlflowClient, grid: str | None) -> tuple[str, str]:
    """(grid name, experiment id); ``grid=None`` picks the only grid of the store.

    Raises
    ------
    ReportError
        When ``grid`` is not in the store, or ``grid=None`` and the store holds other than one grid
        (the message lists the grids present).
    """
    experiments = [e for e in client.search_experiments() if GRID_TAG in e.tags]
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


def load_grid_record(client: MlflowClient, experiment_id: str) -> GridRecord:
    """The grid an experiment ran, as ``dor-bench run`` recorded it on the experiment."""
    return GridRecord.from_json(client.get_experiment(experiment_id).tags[GRID_TAG])


def load_runs(client: MlflowClient, experiment_id: str) -> pd.DataFrame:
    """Every active result and reference run of an experiment as one row (:meth:`RunRecord.as_row`); runs
    that do not name their place in the grid (not written by the harness) are left out.

    Tuning trials are not read: each result run carries every trial's val SRCC (``trial_scores``), which is
    all the report needs of them (:func:`trial_table`), and a grid holds several trials per result.
    """
    records = [RunRecord.from_mlflow(run) for run in all_runs(client, experiment_id, f"tags.{TAGS.role} != '{ROLE_TRIAL}'")]
    rows = [record.as_row() for record in records if record.placeable]
    if not rows:
        return pd.DataFrame(columns=list(BLANK_ROW_COLUMNS))
    return pd.DataFrame(rows)


def usable_runs(runs: pd.DataFrame, warnings: list[str], role: str = ROLE_RESULT) -> pd.DataFrame:
    """One run per (cell, head) of a role: the latest FINISHED one, else the latest FAILED one as a failure.

    ``failed`` marks a unit whose head failed: its latest run FAILED (an exception or a diverged model —
    a rerun of the grid retries exceptions, so one that persists is the head's) or FINISHED with a
    constant prediction (its correlations are undefined). A failed run's metrics are NaN: the comparisons
    use the splits where both heads succeeded, count failures on their own and show a worst-score
    sensitivity analysis. RUNNING and KILLED runs, and runs whose process died (an expired claim), are
    incomplete, not failures (:func:`find_missing`).
    """
    runs = runs[runs[COLUMNS.role] == role]
    status = runs[COLUMNS.status]
    candidates = runs[(status == FINISHED) | ((status == FAILED) & ~runs[COLUMNS.expired])].copy()
    candidates["failed"] = (candidates[COLUMNS.status] == FAILED) | candidates[test_metric("srcc")].isna()
    candidates = candidates.sort_values(["failed", COLUMNS.start_time], ascending=[False, True])
    duplicated = candidates[candidates[COLUMNS.status] == FINISHED].duplicated(RUN_KEYS, keep="last")
    if duplicated.any():
        warn(warnings, f"{int(duplicated.sum())} FINISHED {role} run(s) repeat a (cell, head); the latest of each "
                       "is used")
    usable = candidates.drop_duplicates(RUN_KEYS, keep="last").copy()
    usable.loc[usable["failed"], list(TEST_COLUMNS)] = np.nan
    failed = usable[usable["failed"]]
    if len(failed):
        counts = ", ".join(f"{head} {n}" for head, n in failed[COLUMNS.head].value_counts().items())
        warn(warnings, f"{len(failed)} {role} run(s) failed by their head ({counts}; see their failure tags); the "
                       "comparisons use the splits where both heads succeeded, test the failure rates apart and "
                       "show whether counting failures as the worst score changes a verdict")
    return usable.sort_values(COLUMNS.start_time).reset_index(drop=True)


@dataclass(frozen=True)
class Scores:
    """The score arrays of a set of runs (:attr:`ReportData.scores`, :attr:`ReportData.probes`): every statistic,
    table and plot reads these.

    Attributes
    ----------
    runs : pandas.DataFrame
        One row per usable run: ``RUN_KEYS``, the cell columns, ``failed`` and every ``test_*`` metric
        (NaN for a failed run).
    per_split : pandas.DataFrame
        One row per (pair_key, head, split): the cell columns, each ``test_*`` metric averaged over the
        split's successful seeds, ``n_seeds`` (successful runs) and ``n_failed``.
    """

    runs: pd.DataFrame
    per_split: pd.DataFrame
    _wide: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, usable: pd.DataFrame) -> Scores:
        """Build both tables from :func:`usable_runs`' rows."""
        metrics = [c for c in TEST_COLUMNS if c in usable]
        runs = usable[[*RUN_KEYS, *CELL_COLUMNS[1:], "failed", *metrics]].reset_index(drop=True)
        keys = [COLUMNS.pair_key, COLUMNS.head, COLUMNS.split]
        grouped = runs.groupby(keys, sort=False)
        per_split = grouped[metrics].mean()
        per_split["n_seeds"] = grouped["failed"].apply(lambda f: int((~f).sum()))
        per_split["n_failed"] = grouped["failed"].sum().astype(int)
        cells = runs.drop_duplicates(COLUMNS.pair_key).set_index(COLUMNS.pair_key)[CELL_COLUMNS[1:]]
        per_split = per_split.reset_index().merge(cells, left_on=COLUMNS.pair_key, right_index=True)
        return cls(runs, per_split[[*keys, *CELL_COLUMNS[1:], "n_seeds", "n_failed", *metrics]])

    @property
    def heads(self) -> list[str]:
        """Head labels, in the order their runs first appear."""
        return list(dict.fromkeys(self.runs[COLUMNS.head]))

    @property
    def cells(self) -> pd.DataFrame:
        """One row per comparison group: its cell columns."""
        return self.runs.drop_duplicates(COLUMNS.pair_key)[CELL_COLUMNS].reset_index(drop=True)

    def wide(self, metric: str, per_seed: bool = False) -> pd.DataFrame:
        """A metric with one column per head: rows (pair_key, split) — or (pair_key, split, seed)."""
        if (metric, per_seed) not in self._wide:
            table = self.runs if per_seed else self.per_split
            index = [COLUMNS.pair_key, COLUMNS.split, COLUMNS.seed] if per_seed else [COLUMNS.pair_key, COLUMNS.split]
            self._wide[metric, per_seed] = table.pivot_table(index=index, columns=COLUMNS.head, values=test_metric(metric),
                                                             dropna=False, aggfunc="first")
        return self._wide[metric, per_seed]


@dataclass(frozen=True)
class ReportData:
    """One grid as the report and the plan read it: every consumer (statistics, tables, plots, health, the
    page, the plan) takes this one object, and each view of the runs is computed here once.

    Built by :meth:`of` from the runs of :func:`load_runs`; :func:`load_report_data` loads them from a store.

    Attributes
    ----------
    name, experiment_id : str
        The grid (MLflow experiment).
    client : MlflowClient or None
        The store's client (artifacts and metric histories of a few runs are fetched later); None for runs
        that come from no store.
    record : GridRecord
        The grid as it was run, with the compared pairs and split correlation the caller chose.
    runs : pandas.DataFrame
        Every run of the grid, one row each (:func:`load_runs`).
    usable, probe_runs : pandas.DataFrame
        One result run per expected (cell, head), and the probe runs of
        :meth:`~benchmark.schema.GridRecord.probe_cells` (:func:`usable_runs`).
    """

    name: str
    experiment_id: str
    client: MlflowClient | None
    record: GridRecord
    runs: pd.DataFrame
    usable: pd.DataFrame
    probe_runs: pd.DataFrame

    @classmethod
    def of(cls, name: str, record: GridRecord, runs: pd.DataFrame, warnings: list[str],
           client: MlflowClient | None = None, experiment_id: str = "") -> ReportData:
        """The report's view of a grid's runs: its usable result and probe runs (:func:`usable_runs`, whose
        warnings are appended to ``warnings``)."""
        return cls(name, experiment_id, client, record, runs, usable_runs(runs, warnings),
                   usable_runs(runs, warnings, ROLE_REFERENCE))

    @cached_property
    def scores(self) -> Scores:
        """The per-run and per-split tables of the usable result runs."""
        return Scores.of(self.usable)

    @cached_property
    def probes(self) -> Scores:
        """The per-run and per-split tables of the probe runs."""
        return Scores.of(self.probe_runs)

    @cached_property
    def sizes(self) -> pd.DataFrame:
        """Mean ``n_train`` and ``n_test`` per pair_key, and the r each cell's population test assumes, computed
        here once (:func:`cell_sizes`) for the report, the plan and the calibration."""
        return cell_sizes(self.usable, self.record)

    @cached_property
    def trials(self) -> pd.DataFrame:
        """Every tuning trial of the usable result runs (:func:`trial_table`)."""
        return trial_table(self.usable)

    @cached_property
    def splits(self) -> pd.Series:
        """Per pair_key, the split whose runs the scatter plot and the learning curves show (:func:`shown_splits`)."""
        return shown_splits(self.scores)

    @cached_property
    def missing(self) -> pd.DataFrame:
        """The grid's expected units without a usable run (:func:`find_missing`)."""
        return find_missing(self.record, self.runs, self.usable, self.probe_runs)


def cell_sizes(runs: pd.DataFrame, record: GridRecord) -> pd.DataFrame:
    """Per pair_key, the runs' mean ``n_train`` and ``n_test`` and the r its population test assumes
    (:meth:`~benchmark.schema.GridRecord.assumed_r`; NaN without both sizes)."""
    sizes = runs.groupby(COLUMNS.pair_key)[[COLUMNS.n_train, COLUMNS.n_test]].mean()
    known = (sizes[COLUMNS.n_train] > 0) & (sizes[COLUMNS.n_test] > 0)
    return sizes.assign(**{ASSUMED_R: [record.assumed_r(n_train, n_test) if ok else np.nan for n_train, n_test, ok
                                       in zip(sizes[COLUMNS.n_train], sizes[COLUMNS.n_test], known)]})


def load_report_data(tracking_uri: str, grid: str | None, warnings: list[str],
                     pairs: Sequence[tuple[str, str]] | None = None,
                     split_correlation: float | None = None) -> ReportData:
    """Load a grid's record and runs from the store at ``tracking_uri`` (:meth:`ReportData.of`).

    ``pairs`` replaces the grid's ``compare`` list and ``split_correlation`` its r (a sensitivity analysis).

    Raises
    ------
    ReportError
        On an unknown grid, a store with several grids and no ``grid``, a pair naming a head the grid does
        not have, or a grid without usable result runs.
    """
    client = open_client(tracking_uri)
    name, experiment_id = select_experiment(client, grid)
    record = load_grid_record(client, experiment_id)
    if pairs:
        unknown_heads = sorted({h for pair in pairs for h in pair} - set(record.heads))
        if unknown_heads:
            raise ReportError(f"--pair names head(s) the grid does not have: {', '.join(unknown_heads)}; "
                              f"heads: {', '.join(record.heads)}")
        record = record.with_compare(tuple(pairs))
    if split_correlation is not None:
        record = replace(record, split_correlation=split_correlation)
    runs = load_runs(client, experiment_id)
    data = ReportData.of(name, record, runs, warnings, client, experiment_id)
    if data.usable.empty:
        raise ReportError(f"grid {name!r} has no usable result runs ({len(runs)} other run(s)); run the grid "
                          "first (dor-bench run).")
    return data


def trial_table(usable: pd.DataFrame) -> pd.DataFrame:
    """Every tuning trial of the usable result runs, one row each: ``pair_key, head, split, seed,
    parent_run_id, trial``, the trial's tuned values (``tuned.<setting>``) and its ``best_val_srcc``."""
    rows = [{COLUMNS.pair_key: run.pair_key, COLUMNS.head: run.head, COLUMNS.split: run.split, COLUMNS.seed: run.seed,
             COLUMNS.parent_run_id: run.run_id, COLUMNS.trial: key, COLUMNS.best_val_srcc: value,
             **{f"{TUNED_PREFIX}{name}": v for name, v in trial_values(key).items()}}
            for run in usable.itertuples() if isinstance(run.trial_scores, dict)
            for key, value in run.trial_scores.items()]
    return pd.DataFrame(rows, columns=None if rows else [COLUMNS.pair_key, COLUMNS.head, COLUMNS.split, COLUMNS.seed,
                                                         COLUMNS.parent_run_id,
                                                          COLUMNS.trial, COLUMNS.best_val_srcc])


def find_missing(grid: GridRecord, runs: pd.DataFrame, usable: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """Expected units of the grid without a usable run: (cell, head) results and the probes of
    :meth:`~benchmark.schema.GridRecord.probe_cells`.

    A result whose latest run is RUNNING or KILLED is listed with that status, one that never started as
    ``absent``; a probe without a usable run is listed as ``absent``.
    """
    expected = pd.DataFrame([{**c.tags(), COLUMNS.head: head} for c in grid.cells() for head in grid.heads])
    if expected.empty:
        return expected.assign(status=pd.Series(dtype=str))
    done = usable[RUN_KEYS].assign(_done=True)
    missing = expected.merge(done, on=RUN_KEYS, how="left")
    missing = missing[missing["_done"].isna()].drop(columns="_done")
    results = runs[runs[COLUMNS.role] == ROLE_RESULT].sort_values(COLUMNS.start_time).drop_duplicates(RUN_KEYS, keep="last")
    missing = missing.merge(results[[*RUN_KEYS, COLUMNS.status]], on=RUN_KEYS, how="left").fillna({COLUMNS.status: "absent"})
    recorded = set(zip(probes[COLUMNS.pair_key], probes[COLUMNS.split], probes[COLUMNS.seed])) if len(probes) else set()
    lacking = [{**c.tags(), COLUMNS.head: PROBE_HEAD, COLUMNS.status: "absent"} for c in grid.probe_cells()
               if (c.pair_key, c.split, c.seed) not in recorded]
    missing = pd.concat([missing, pd.DataFrame(lacking)], ignore_index=True) if lacking else missing
    return missing[[*CELL_COLUMNS, COLUMNS.split, COLUMNS.seed, COLUMNS.head, COLUMNS.status,
                    COLUMNS.cell_key]].reset_index(drop=True)


def shown_splits(scores: Scores) -> pd.Series:
    """Per pair_key, the split whose predictions the scatter plot and the learning curves use: the lowest split
    where every head has a successful run (else the lowest split). A fixed rule, so the choice never
    depends on any head's test score."""
    ok = scores.runs[~scores.runs["failed"]]
    complete = ok.groupby([COLUMNS.pair_key, COLUMNS.split])[COLUMNS.head].nunique()
    heads = scores.runs.groupby(COLUMNS.pair_key)[COLUMNS.head].nunique()
    chosen = {}
    for pair_key, group in complete.groupby(level=COLUMNS.pair_key):
        full = group[group == heads[pair_key]]
        chosen[pair_key] = int((full if len(full) else group).index.get_level_values(COLUMNS.split).min())
    return pd.Series(chosen, name=COLUMNS.split, dtype=int)


def split_runs(usable: pd.DataFrame, splits: pd.Series) -> pd.DataFrame:
    """Each head's lowest-seed successful run at each pair_key's chosen split (``splits``: pair_key -> split)."""
    ok = usable[~usable["failed"]]
    runs = ok.merge(splits.rename(COLUMNS.split).rename_axis(COLUMNS.pair_key).reset_index(), on=[COLUMNS.pair_key,
                                                                                                  COLUMNS.split])
    return runs.sort_values(COLUMNS.seed, kind="stable").drop_duplicates([COLUMNS.pair_key, COLUMNS.head])


def load_predictions(data: ReportData, splits: pd.Series, warnings: list[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """``predictions.csv`` of the runs of :func:`split_runs` at ``splits`` (pair_key -> split; some of
    :attr:`ReportData.splits`), keyed by (pair_key, head).

    A run whose file cannot be read or lacks a column is left out, with a warning.
    """
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in split_runs(data.usable, splits).itertuples():
            try:
                path = data.client.download_artifacts(run.run_id, PREDICTIONS_ARTIFACT, str(Path(tmp) / run.run_id))
                frame = pd.read_csv(path)
            except (MlflowException, OSError, pd.errors.ParserError) as err:
                warn(warnings, f"run {run.run_id} ({run.pair_key}, {run.head}): cannot read {PREDICTIONS_ARTIFACT} "
                               f"({err}); its scatter panel is left out")
                continue
            if not set(PREDICTION_COLUMNS[:3]) <= set(frame.columns):
                warn(warnings, f"run {run.run_id}: {PREDICTIONS_ARTIFACT} lacks the columns "
                               f"{', '.join(PREDICTION_COLUMNS[:3])} (has {', '.join(frame.columns)}); its scatter "
                               "panel is left out")
                continue
            out[(run.pair_key, run.head)] = frame
    return out


def load_learning_curves(data: ReportData) -> pd.DataFrame:
    """Per-epoch curves of the lowest-seed runs at the shown split (:attr:`ReportData.splits`) of the first
    ``MAX_CURVE_CELLS`` pair keys (columns pair_key, head, metric, step, value)."""
    runs = split_runs(data.usable, data.splits.iloc[:MAX_CURVE_CELLS])
    rows = [(run.pair_key, run.head, key, m.step, m.value)
            for run in runs.itertuples() for key in CURVES for m in data.client.get_metric_history(run.run_id, key)]
    return pd.DataFrame(rows, columns=[COLUMNS.pair_key, COLUMNS.head, "metric", "step", "value"])


__all__ = ["ASSUMED_R", "CELL_COLUMNS", "RUN_KEYS", "ReportData", "ReportError", "Scores", "cell_sizes", "find_missing", "load_grid_record",
           "load_learning_curves", "load_predictions", "load_report_data", "load_runs", "select_experiment", "shown_splits",
           "split_runs", "trial_table", "usable_runs", "warn"]
