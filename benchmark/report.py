"""Report of a grid: statistics, tables and plots from the MLflow store (no retraining).

:func:`build_report` reads every run of a grid with one ``mlflow.search_runs`` call, pairs the heads
of each matched cell split by split (seeds averaged within a split first), runs the tests of
:mod:`benchmark.stats`, and writes CSV files, paper-style tables (:mod:`benchmark.tables`), plots
(:mod:`benchmark.plots`) and ``provenance.json`` into ``results/<grid>/``. Only FINISHED runs count;
every expected (cell, head) run without one is listed in ``missing.csv`` and reported as a warning.
Artifacts are read only for the median split of each comparison group (bootstrap CIs, scatter plot)
and metric histories only for the learning-curve plot.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from scipy import stats as sps

from benchmark import plots, stats, tables
from benchmark.provenance import write_provenance
from benchmark.tracking import PREDICTIONS_ARTIFACT, RUN_TAGS, TEST_METRICS, resolve_tracking_uri, uri_kind

log = logging.getLogger(__name__)

KEY_TAGS = ("pair_key", "head", "split", "seed", "backbone", "dataset", "test_dataset", "regime")
"""Tags without which a run cannot be placed in the grid."""
KEY_PARAMS = ("n_train", "n_val", "n_test", "head.num_bins", "epochs")
CELL_COLUMNS = ["pair_key", "backbone", "dataset", "test_dataset", "regime"]
STATS_COLUMNS = [*CELL_COLUMNS, "head_a", "head_b", "metric", "n_splits", "n_train", "n_test", "mean_a", "mean_b",
                 "mean_delta", "median_delta", "std_delta", "ci_low", "ci_high", "t_corrected", "p_corrected",
                 "p_naive", "p_wilcoxon", "p_holm", "significant", "boot_split", "boot_ci_low", "boot_ci_high"]
DOR, DOR_SEED = "dor", "dor-seed"
ALPHA = 0.05
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
MAX_CURVE_CELLS = 4
"""Comparison groups shown in the learning-curve plot (their metric histories are fetched one by one)."""


class ReportError(ValueError):
    """The report cannot be built from this store (unknown grid, no usable runs, bad option)."""


@dataclass
class ReportResult:
    """What :func:`build_report` wrote and what it found."""

    grid: str
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    n_runs: int = 0
    """FINISHED runs used."""
    n_unfinished: int = 0
    """Runs in the store that are FAILED, RUNNING or KILLED (ignored)."""
    n_missing: int = 0
    """Expected (cell, head) runs without a FINISHED run."""
    n_pairs: int = 0
    """Rows of ``pairs.csv`` (per-split paired differences)."""
    n_stats_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0


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


def _select_experiment(client: MlflowClient, grid: str | None) -> tuple[str, str]:
    """(grid name, experiment id); ``grid=None`` picks the only non-empty experiment of the store."""
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
    for param in KEY_PARAMS:
        out["num_bins" if param == "head.num_bins" else param] = pd.to_numeric(column(f"params.{param}"))
    for metric in [f"test_{m}" for m in TEST_METRICS] + ["best_epoch", "best_val_srcc", "train_seconds"]:
        out[metric] = pd.to_numeric(column(f"metrics.{metric}"))
    return out


def usable_runs(runs: pd.DataFrame, warnings: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split runs into (all placeable runs, FINISHED runs with one run per cell and head)."""
    placeable = runs.dropna(subset=list(KEY_TAGS))
    if len(placeable) < len(runs):
        _warn(warnings, f"{len(runs) - len(placeable)} run(s) lack one of the tags {', '.join(KEY_TAGS)} "
                        "and were ignored (not written by the harness?)")
    placeable = placeable.astype({"split": int, "seed": int})
    finished = placeable[placeable["status"] == "FINISHED"].sort_values("start_time")
    duplicated = finished.duplicated(["pair_key", "split", "seed", "head"], keep="last")
    if duplicated.any():
        _warn(warnings, f"{int(duplicated.sum())} FINISHED run(s) repeat a (cell, head); the latest of each is used")
    return placeable, finished[~duplicated]


def find_missing(placeable: pd.DataFrame, finished: pd.DataFrame) -> pd.DataFrame:
    """Expected (cell, head) runs without a FINISHED run.

    The grid is taken as the product of the pair keys, splits, seeds and heads seen in any run; a
    run that is FAILED/RUNNING/KILLED is reported with its status, one that never started as ``absent``.
    """
    cells = placeable.drop_duplicates("pair_key")[CELL_COLUMNS]
    grid = pd.MultiIndex.from_product(
        [cells["pair_key"], sorted(placeable["split"].unique()), sorted(placeable["seed"].unique()),
         list(dict.fromkeys(placeable["head"]))], names=["pair_key", "split", "seed", "head"]).to_frame(index=False)
    keys = ["pair_key", "split", "seed", "head"]
    done = finished[keys].assign(_done=True)
    unfinished = placeable[placeable["status"] != "FINISHED"].sort_values("start_time")
    unfinished = unfinished.drop_duplicates(keys, keep="last")
    missing = grid.merge(done, on=keys, how="left")
    missing = missing[missing["_done"].isna()].drop(columns="_done")
    missing = missing.merge(unfinished[[*keys, "status"]], on=keys, how="left").fillna({"status": "absent"})
    missing = missing.merge(cells, on="pair_key")
    missing["cell_key"] = (missing["pair_key"] + "|split" + missing["split"].astype(str)
                           + "|seed" + missing["seed"].astype(str))
    return missing[[*CELL_COLUMNS, "split", "seed", "head", "status", "cell_key"]].reset_index(drop=True)


def comparisons(heads: Sequence[str], reference: str) -> list[tuple[str, str]]:
    """Head pairs (A, B) to test: every head vs the reference, plus ``dor`` vs ``dor-seed``.

    Examples
    --------
    >>> comparisons(["mse", "dor", "dor-seed"], "mse")
    [('dor', 'mse'), ('dor-seed', 'mse'), ('dor', 'dor-seed')]
    """
    pairs = [(h, reference) for h in heads if h != reference] if reference in heads else []
    if DOR in heads and DOR_SEED in heads and reference not in (DOR, DOR_SEED):
        pairs.append((DOR, DOR_SEED))
    return pairs


def split_values(finished: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Test metric per (pair_key, split, seed) row and head column."""
    return finished.set_index(["pair_key", "split", "seed", "head"])[f"test_{metric}"].unstack("head")


def paired_deltas(finished: pd.DataFrame, pairs: Sequence[tuple[str, str]], metrics: Sequence[str]) -> pd.DataFrame:
    """Per-split paired values: seeds where both heads FINISHED, averaged within the split; delta = A - B."""
    cells = finished.drop_duplicates("pair_key")[CELL_COLUMNS]
    frames = []
    for metric in metrics:
        wide = split_values(finished, metric)
        for head_a, head_b in pairs:
            both = wide[[head_a, head_b]].dropna()
            per_split = both.groupby(["pair_key", "split"]).agg(
                n_seeds=(head_a, "size"), value_a=(head_a, "mean"), value_b=(head_b, "mean")).reset_index()
            frames.append(per_split.assign(head_a=head_a, head_b=head_b, metric=metric,
                                           delta=per_split["value_a"] - per_split["value_b"]))
    columns = [*CELL_COLUMNS, "split", "head_a", "head_b", "metric", "n_seeds", "value_a", "value_b", "delta"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).merge(cells, on="pair_key")[columns]


def _corrected_ci(d: np.ndarray, n_train: float, n_test: float) -> tuple[float, float]:
    """95 % CI of the mean delta with the corrected resampled variance and J - 1 df (inverts the test)."""
    # Hand-written: the interval matching stats.corrected_resampled_ttest; no library offers it.
    j = d.size
    half = sps.t.ppf(1 - ALPHA / 2, j - 1) * np.sqrt((1 / j + n_test / n_train) * np.var(d, ddof=1))
    return float(d.mean() - half), float(d.mean() + half)


def cell_stats(pairs: pd.DataFrame, finished: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """One row per (cell, head pair, metric): means, CI, corrected/naive t-tests, Wilcoxon, Holm."""
    sizes = finished.groupby("pair_key")[["n_train", "n_test"]].mean().to_dict("index")
    cells = finished.drop_duplicates("pair_key").set_index("pair_key")[CELL_COLUMNS[1:]].to_dict("index")
    rows = []
    for (pair_key, head_a, head_b, metric), group in pairs.groupby(["pair_key", "head_a", "head_b", "metric"],
                                                                    sort=False):
        d = group["delta"].to_numpy(dtype=float)
        n_train, n_test = sizes[pair_key]["n_train"], sizes[pair_key]["n_test"]
        row = {"pair_key": pair_key, **cells[pair_key], "head_a": head_a, "head_b": head_b, "metric": metric,
               "n_splits": d.size, "n_train": n_train, "n_test": n_test, "mean_a": group["value_a"].mean(),
               "mean_b": group["value_b"].mean(), "mean_delta": d.mean(), "median_delta": np.median(d),
               "std_delta": d.std(ddof=1) if d.size > 1 else np.nan}
        row.update(dict.fromkeys(["ci_low", "ci_high", "t_corrected", "p_corrected", "p_naive"], np.nan))
        if d.size >= 2 and n_train > 0 and n_test > 0:
            row["t_corrected"], row["p_corrected"] = stats.corrected_resampled_ttest(d, n_train, n_test)
            row["ci_low"], row["ci_high"] = _corrected_ci(d, n_train, n_test)
            row["p_naive"] = stats.naive_paired_ttest(d)[1]
        elif metric == "srcc":
            _warn(warnings, f"{pair_key} {head_a} vs {head_b}: {d.size} complete split(s) or unknown "
                            "n_train/n_test params; no t-test")
        row["p_wilcoxon"] = stats.wilcoxon_p(d)
        rows.append(row)
    out = pd.DataFrame(rows, columns=STATS_COLUMNS[:-5])
    if out.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    # statsmodels' Holm runs gc.collect(), which scans the whole MLflow/torch/pandas heap (~0.3 s a
    # call here); with the long-lived objects frozen first it takes well under a millisecond.
    gc.freeze()
    try:
        out["p_holm"] = out.groupby("metric")["p_corrected"].transform(lambda p: stats.holm(p.to_numpy()))
    finally:
        gc.unfreeze()
    out["significant"] = out["p_holm"] < ALPHA
    return out


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


def _median_runs(finished: pd.DataFrame, medians: pd.Series) -> pd.DataFrame:
    """Each head's lowest-seed FINISHED run at each pair_key's median split."""
    runs = finished.merge(medians.rename("split").rename_axis("pair_key").reset_index(), on=["pair_key", "split"])
    return runs.sort_values("seed", kind="stable").drop_duplicates(["pair_key", "head"])


def load_predictions(uri: str, finished: pd.DataFrame, medians: pd.Series,
                     warnings: list[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """``predictions.csv`` (image, mos, pred) of the runs of :func:`_median_runs`, keyed by (pair_key, head)."""
    out = {}
    with _tracking_uri(uri):
        for run in _median_runs(finished, medians).itertuples():
            try:
                text = mlflow.artifacts.load_text(f"{run.artifact_uri}/{PREDICTIONS_ARTIFACT}")
                frame = pd.read_csv(io.StringIO(text))
            except (MlflowException, OSError, pd.errors.ParserError) as err:
                _warn(warnings, f"run {run.run_id} ({run.pair_key}, {run.head}): cannot read {PREDICTIONS_ARTIFACT} "
                                f"({err}); its bootstrap CI and scatter panel are left out")
                continue
            if not {"image", "mos", "pred"} <= set(frame.columns):
                _warn(warnings, f"run {run.run_id}: {PREDICTIONS_ARTIFACT} lacks the columns image, mos, pred "
                                f"(has {', '.join(frame.columns)}); its bootstrap CI and scatter panel are left out")
                continue
            out[(run.pair_key, run.head)] = frame
    return out


def _centred_ranks(x: np.ndarray) -> np.ndarray:
    ranks = sps.rankdata(x, axis=-1)
    return ranks - ranks.mean(axis=-1, keepdims=True)


def cell_bootstrap(panels: dict[str, pd.DataFrame], pairs: Sequence[tuple[str, str]],
                   n_resamples: int = 2000, seed: int = 0) -> dict[tuple[str, str], tuple[float, float]]:
    """Paired bootstrap 95 % CIs of dSRCC for every head pair of one cell, from one set of resamples.

    The resampled images, the statistic and the BCa interval are those of
    :func:`benchmark.stats.paired_bootstrap_srcc_ci` (same seed, so the same intervals); each head is
    ranked once per resample instead of once per pair, which more than halves the cost with 5 heads.

    Parameters
    ----------
    panels : dict of str to pandas.DataFrame
        Head -> its ``predictions.csv`` (image, mos, pred) on the cell's median split.
    pairs : sequence of (str, str)
        Head pairs (A, B); the difference is SRCC(A) - SRCC(B). Pairs with a head absent from
        ``panels`` or with constant predictions are skipped.
    n_resamples, seed : int
        Bootstrap resamples and seed.

    Returns
    -------
    dict
        (head A, head B) -> (low, high).

    Raises
    ------
    ReportError
        When the heads' predictions do not cover the same images with the same MOS, or the MOS is constant.
    """
    # Hand-written statistic: stats.paired_bootstrap_srcc_ci handles one pair; this is its multi-pair form.
    usable = {h for h, frame in panels.items() if frame["pred"].nunique() > 1}  # SRCC of a constant is undefined
    pairs = [(a, b) for a, b in pairs if a in usable and b in usable]
    heads = list(dict.fromkeys(h for pair in pairs for h in pair))
    if not pairs:
        return {}
    merged = panels[heads[0]][["image", "mos"]]
    for head in heads:
        merged = merged.merge(panels[head][["image", "mos", "pred"]].rename(
            columns={"mos": f"mos_{head}", "pred": head}), on="image")
    if len(merged) < 3 or any(not np.allclose(merged["mos"], merged[f"mos_{h}"]) for h in heads):
        raise ReportError("the heads' test predictions at the median split do not share the same images and MOS")
    if merged["mos"].nunique() < 2:
        raise ReportError("constant MOS at the median split: SRCC is undefined")
    samples = [merged["mos"].to_numpy(), *(merged[h].to_numpy() for h in heads)]
    column = {h: i for i, h in enumerate(heads)}

    def delta_srcc(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        ranks = [_centred_ranks(np.moveaxis(a, axis, -1)) for a in arrays]
        srcc = [np.sum(ranks[0] * r, axis=-1) / np.sqrt(np.sum(ranks[0] ** 2, axis=-1) * np.sum(r**2, axis=-1))
                for r in ranks[1:]]
        return np.stack([srcc[column[a]] - srcc[column[b]] for a, b in pairs])

    ci = sps.bootstrap(samples, delta_srcc, paired=True, vectorized=True, n_resamples=n_resamples,
                       confidence_level=1 - ALPHA, method="BCa", rng=np.random.default_rng(seed),
                       batch=500).confidence_interval
    return {pair: (float(low), float(high)) for pair, low, high in zip(pairs, ci.low, ci.high, strict=True)}


def add_bootstrap(stats_df: pd.DataFrame, predictions: dict, medians: pd.Series, warnings: list[str]) -> None:
    """Bootstrap CIs of dSRCC on each cell's median split (srcc rows of ``stats_df``, in place)."""
    stats_df[["boot_split", "boot_ci_low", "boot_ci_high"]] = np.nan
    srcc = stats_df[stats_df["metric"] == "srcc"]
    for pair_key, rows in srcc.groupby("pair_key", sort=False):
        panels = {head: frame for (key, head), frame in predictions.items() if key == pair_key}
        pairs = list(zip(rows["head_a"], rows["head_b"], strict=True))
        try:
            intervals = cell_bootstrap(panels, pairs)
        except ReportError as err:
            _warn(warnings, f"{pair_key}: {err}; no bootstrap CI")
            continue
        lacking = [f"{a} vs {b}" for a, b in pairs if (a, b) not in intervals]
        if lacking:
            _warn(warnings, f"{pair_key}: no bootstrap CI for {', '.join(lacking)} (predictions at the median "
                            "split missing or constant)")
        for i, row in rows.iterrows():
            if (row["head_a"], row["head_b"]) in intervals:
                stats_df.loc[i, ["boot_split", "boot_ci_low", "boot_ci_high"]] = [
                    medians[pair_key], *intervals[(row["head_a"], row["head_b"])]]


def across_datasets(stats_df: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """Wilcoxon over datasets of the per-dataset mean deltas, per (backbone, regime, head pair, metric)."""
    rows = []
    keys = ["backbone", "regime", "head_a", "head_b", "metric"]
    for key, group in stats_df.dropna(subset=["mean_delta"]).groupby(keys, sort=False):
        deltas = group["mean_delta"].to_numpy()
        p, caveat = stats.across_dataset_wilcoxon(deltas)
        rows.append({**dict(zip(keys, key, strict=True)), "n_datasets": deltas.size,
                     "datasets": ";".join(group["dataset"] + "->" + group["test_dataset"]),
                     "mean_delta": deltas.mean(), "n_positive": int((deltas > 0).sum()), "p_wilcoxon": p,
                     "caveat": caveat or ""})
        if caveat:
            _warn(warnings, f"across datasets: {caveat}")
    return pd.DataFrame(rows, columns=[*keys, "n_datasets", "datasets", "mean_delta", "n_positive",
                                       "p_wilcoxon", "caveat"])


def _warn(warnings: list[str], message: str) -> None:
    if message not in warnings:
        warnings.append(message)
        log.warning(message)


def build_report(grid: str | None = None, tracking_uri: str | None = None, out_dir: Path | None = None,
                 reference: str = "mse", metrics: Sequence[str] = ("srcc", "plcc"),
                 command: str | Sequence[str] | None = None) -> ReportResult:
    """Write the statistics, tables, plots and provenance of a grid.

    Parameters
    ----------
    grid : str or None
        Grid (experiment) name; ``None`` picks the only grid in the store.
    tracking_uri : str or None
        MLflow tracking URI (default: :func:`benchmark.tracking.resolve_tracking_uri`).
    out_dir : Path or None
        Output folder (default ``results/<grid>``).
    reference : str, default "mse"
        Head label every other head is compared with.
    metrics : sequence of str, default ("srcc", "plcc")
        Test metrics to test and tabulate (``srcc`` is always tested: the summary and plots use it).
    command : str or sequence of str, optional
        Command line recorded in ``provenance.json`` (default ``sys.argv``).

    Returns
    -------
    ReportResult
        Written files, counts and warnings (the warnings are also logged).

    Raises
    ------
    ReportError
        On an unknown grid (the message lists the grids), a store with several grids and no ``grid``,
        an unknown metric, or a grid without FINISHED runs.
    """
    start = time.perf_counter()
    unknown = sorted(set(metrics) - set(TEST_METRICS))
    if unknown:
        raise ReportError(f"unknown metric(s) {unknown}; choose from {', '.join(TEST_METRICS)}.")
    metrics = tuple(dict.fromkeys(("srcc", *metrics)))
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    grid, experiment_id = _select_experiment(client, grid)
    out = Path(out_dir) if out_dir is not None else Path("results") / grid
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(grid=grid, out_dir=out)
    warnings = result.warnings

    placeable, finished = usable_runs(load_runs(uri, experiment_id), warnings)
    if finished.empty:
        raise ReportError(f"grid {grid!r} has no FINISHED runs ({len(placeable)} other run(s)); run the grid first.")
    heads = list(dict.fromkeys(finished["head"]))
    if reference not in heads:
        _warn(warnings, f"reference head {reference!r} has no FINISHED run (heads: {', '.join(heads)}); "
                        "only dor vs dor-seed is tested")
    missing = find_missing(placeable, finished)
    if len(missing):
        _warn(warnings, f"{len(missing)} expected (cell, head) run(s) are missing or not FINISHED (see missing.csv); "
                        "statistics use only splits where both heads of a pair FINISHED")
    nan_metrics = int(finished[[f"test_{m}" for m in metrics]].isna().to_numpy().sum())
    if nan_metrics:
        _warn(warnings, f"{nan_metrics} test metric value(s) of FINISHED runs are NaN (collapsed models?); "
                        "those splits are left out of the pairs that need them")

    pairs = comparisons(heads, reference)
    if not pairs:
        _warn(warnings, f"no head pairs to compare (heads: {', '.join(heads)}); no statistics, forest or slope plot")
    deltas = paired_deltas(finished, pairs, metrics)
    stats_df = cell_stats(deltas, finished, warnings)
    medians = median_splits(finished, reference if reference in heads else heads[0])
    predictions = load_predictions(uri, finished, medians, warnings)
    add_bootstrap(stats_df, predictions, medians, warnings)
    across = across_datasets(stats_df, warnings)
    log.debug("%.2f s: runs, statistics and predictions loaded", time.perf_counter() - start)

    files = result.files
    files.update(tables.write_tables(out, finished, stats_df, reference, metrics))
    files.update(_write_plots(out, client, finished, deltas, stats_df, predictions, medians, reference, warnings))
    log.debug("%.2f s: tables and plots written", time.perf_counter() - start)
    run_columns = ["run_id", "status", *RUN_TAGS, "n_train", "n_val", "n_test", "num_bins", "epochs",
                   *[f"test_{m}" for m in TEST_METRICS], "best_epoch", "best_val_srcc", "train_seconds"]
    for name, frame in (("runs", finished[run_columns]), ("pairs", deltas), ("stats", stats_df),
                        ("across_datasets", across), ("missing", missing)):
        files[f"{name}.csv"] = out / f"{name}.csv"
        frame.to_csv(files[f"{name}.csv"], index=False)

    result.n_runs, result.n_unfinished = len(finished), int((placeable["status"] != "FINISHED").sum())
    result.n_missing, result.n_pairs, result.n_stats_rows = len(missing), len(deltas), len(stats_df)
    result.duration_s = time.perf_counter() - start
    files["provenance.json"] = write_provenance(
        out, command if command is not None else sys.argv, grid=grid, tracking_uri_kind=uri_kind(uri),
        reference=reference, metrics=list(metrics), n_runs_finished=result.n_runs,
        n_runs_unfinished=result.n_unfinished, n_missing=result.n_missing, n_pairs=result.n_pairs,
        n_stats_rows=result.n_stats_rows, warnings=warnings, duration_s=round(result.duration_s, 3))
    log.info("report of grid %r written to %s in %.1f s", grid, out, result.duration_s)
    return result


def _write_plots(out: Path, client: MlflowClient, finished: pd.DataFrame, deltas: pd.DataFrame,
                 stats_df: pd.DataFrame, predictions: dict, medians: pd.Series, reference: str,
                 warnings: list[str]) -> dict[str, Path]:
    """Every plot whose data exists; returns {file name: path}."""
    written: dict[str, Path] = {}
    heads = list(dict.fromkeys(finished["head"]))
    colors = plots.head_colors(heads)

    def save(name: str, draw, *args) -> None:
        written[name] = out / name
        draw(*args, written[name])

    if not stats_df.empty:
        save("forest_srcc.png", plots.forest, stats_df[stats_df["metric"] == "srcc"], "srcc")
        ref_pairs = deltas[(deltas["metric"] == "srcc") & (deltas["head_b"] == reference)]
        if not ref_pairs.empty:
            save("slope_srcc.png", plots.slope, ref_pairs, "srcc", colors)
    first = next(iter(medians.index), None)
    panels = {head: predictions[(first, head)] for head in heads if (first, head) in predictions}
    if panels:
        save("scatter_median_split.png", plots.scatter_median_split, panels, first, int(medians[first]), colors)
    curves = _learning_curves(client, finished, medians)
    if not curves.empty:
        save("learning_curves.png", plots.learning_curves, curves, colors, len(medians))
    k_table = k_ablation_table(finished)
    if not k_table.empty:
        save("k_ablation.png", plots.k_ablation, k_table)
    if len(heads) >= 3:
        scores = split_values(finished, "srcc").groupby(["pair_key", "split"]).mean().dropna()
        if len(scores) >= 2:
            ranks = stats.average_ranks(scores)
            cd = stats.nemenyi_critical_difference(scores.shape[1], len(scores))
            save("critical_difference.png", plots.critical_difference, ranks, cd, stats.friedman_test(scores),
                 len(scores))
        else:
            _warn(warnings, "fewer than 2 (cell, split) blocks where every head FINISHED; no critical-difference plot")
    return written


def _learning_curves(client: MlflowClient, finished: pd.DataFrame, medians: pd.Series) -> pd.DataFrame:
    """val_srcc and train_loss histories of the lowest-seed runs at the median split of the first
    ``MAX_CURVE_CELLS`` pair keys (columns pair_key, head, metric, step, value)."""
    runs = _median_runs(finished, medians.iloc[:MAX_CURVE_CELLS])
    rows = [(run.pair_key, run.head, key, m.step, m.value)
            for run in runs.itertuples() for key in ("val_srcc", "train_loss")
            for m in client.get_metric_history(run.run_id, key)]
    return pd.DataFrame(rows, columns=["pair_key", "head", "metric", "step", "value"])


def k_ablation_table(finished: pd.DataFrame) -> pd.DataFrame:
    """SRCC mean and std over splits per (head_type, pair_key, num_bins), for head types run with more than
    one ``head.num_bins`` (missing values filled with the registry default); empty when none varies."""
    from benchmark.heads import UnknownHeadError, head_hparams  # registry (imports torch): only needed here

    runs = finished.dropna(subset=["head_type"]).copy()
    for head_type in runs["head_type"].unique():
        try:
            default = head_hparams(head_type).get("num_bins")
        except UnknownHeadError:
            continue
        if default is not None:
            rows = runs["head_type"] == head_type
            runs.loc[rows, "num_bins"] = runs.loc[rows, "num_bins"].fillna(default)
    runs = runs.dropna(subset=["num_bins", "test_srcc"])
    varied = runs.groupby("head_type")["num_bins"].nunique()
    runs = runs[runs["head_type"].isin(varied[varied > 1].index)]
    per_split = runs.groupby(["head_type", "pair_key", "num_bins", "split"])["test_srcc"].mean()
    table = per_split.groupby(["head_type", "pair_key", "num_bins"]).agg(["mean", "std", "size"])
    return table.rename(columns={"size": "n_splits"}).reset_index()


__all__ = ["ReportError", "ReportResult", "build_report", "comparisons", "load_runs", "paired_deltas"]
