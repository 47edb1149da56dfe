"""Report of a grid: statistics, tables and plots from the MLflow store (no retraining).

:func:`build_report` reads the runs of a grid (:mod:`benchmark.analysis.report_data`), pairs the heads of each
matched cell split by split (seeds averaged within a split first), runs the tests of
:mod:`benchmark.analysis.stats`, and writes CSV files, paper-style tables (:mod:`benchmark.analysis.tables`), plots
(:mod:`benchmark.analysis.plots`) and ``provenance.json`` into ``results/<grid>/``. FINISHED result runs count,
and so do runs that failed by their head's own doing (as SRCC = 0, :func:`benchmark.analysis.report_data.usable_runs`);
every expected (cell, head) run without one is listed in ``missing.csv`` and reported as a warning.

Files: ``runs.csv`` (FINISHED runs used), ``pairs.csv`` (per-split paired values), ``stats.csv``
(per cell and head pair: tests, Bayesian verdicts, power), ``across_datasets.csv`` (Wilcoxon over
datasets of the per-dataset mean deltas, with the small-N caveat), ``missing.csv``, ``health.csv``
(heads vs the linear probe), ``table_<metric>.{md,tex,csv}``, ``summary_dor_variants.{md,csv}``, PNG
plots and ``provenance.json``.

``stats.csv`` is described in :mod:`benchmark.analysis.comparisons`; ``health.csv`` in :mod:`benchmark.analysis.health`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from benchmark.analysis import plots, stats, tables
from benchmark.analysis.comparisons import (
    across_datasets,
    add_bootstrap,
    cell_stats,
    comparisons,
    paired_deltas,
    rank_blocks,
)
from benchmark.analysis.health import health_check, health_warnings
from benchmark.provenance import write_provenance
from benchmark.analysis.report_data import (
    ReportError,
    find_missing,
    load_learning_curves,
    load_predictions,
    load_runs,
    select_experiment,
    shown_splits,
    usable_runs,
    warn,
)
from benchmark.schema import FIT_METRICS, ROLE_REFERENCE, RUN_TAGS, TEST_METRICS, metric_key
from benchmark.run.tracking import resolve_tracking_uri, uri_kind

log = logging.getLogger(__name__)



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


def build_report(grid: str | None = None, tracking_uri: str | None = None, out_dir: Path | None = None,
                 reference: str = "mse", metrics: Sequence[str] = ("srcc", "plcc"),
                 command: str | Sequence[str] | None = None,
                 pairs: Sequence[tuple[str, str]] | None = None) -> ReportResult:
    """Write the statistics, tables, plots and provenance of a grid.

    Parameters
    ----------
    grid : str or None
        Grid (experiment) name; ``None`` picks the only grid in the store.
    tracking_uri : str or None
        MLflow tracking URI (default: :func:`benchmark.run.tracking.resolve_tracking_uri`).
    out_dir : Path or None
        Output folder (default ``results/<grid>``).
    reference : str, default "mse"
        Head label every other head is compared with.
    metrics : sequence of str, default ("srcc", "plcc")
        Test metrics to test and tabulate (``srcc`` is always tested: the summary and plots use it).
    command : str or sequence of str, optional
        Command line recorded in ``provenance.json`` (default ``sys.argv``).
    pairs : sequence of (str, str), optional
        Head pairs (A, B) to test instead of :func:`comparisons` (e.g. an ablation's variant vs its base).

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
    grid, experiment_id = select_experiment(client, grid)
    out = Path(out_dir) if out_dir is not None else Path("results") / grid
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(grid=grid, out_dir=out)
    warnings = result.warnings

    runs = load_runs(uri, experiment_id)
    placeable, finished = usable_runs(runs, warnings)
    probes = usable_runs(runs, warnings, ROLE_REFERENCE)[1]
    if finished.empty:
        raise ReportError(f"grid {grid!r} has no FINISHED runs ({len(placeable)} other run(s)); run the grid first.")
    heads = list(dict.fromkeys(finished["head"]))
    if reference not in heads:
        warn(warnings, f"reference head {reference!r} has no FINISHED run (heads: {', '.join(heads)}); "
                       "only dor vs dor-seed is tested")
    missing = find_missing(placeable, finished)
    if len(missing):
        warn(warnings, f"{len(missing)} expected (cell, head) run(s) are missing or not FINISHED (see missing.csv); "
                       "statistics use only splits where both heads of a pair FINISHED")
    rope = _rope(finished, warnings)

    unknown_heads = sorted({h for pair in pairs or () for h in pair} - set(heads))
    if unknown_heads:
        raise ReportError(f"--pair names head(s) without FINISHED runs: {', '.join(unknown_heads)}; "
                          f"heads: {', '.join(heads)}")
    pairs = list(pairs) if pairs else comparisons(heads, reference)
    if not pairs:
        warn(warnings, f"no head pairs to compare (heads: {', '.join(heads)}); no statistics, forest or slope plot")
    deltas = paired_deltas(finished, pairs, metrics)
    stats_df = cell_stats(deltas, finished, warnings, rope)
    splits = shown_splits(finished)
    predictions = load_predictions(uri, finished, splits, warnings)
    add_bootstrap(stats_df, predictions, splits, warnings)
    across = across_datasets(stats_df, warnings)
    health = health_check(finished, probes)
    for message in health_warnings(health):
        warn(warnings, message)
    log.debug("%.2f s: runs, statistics and predictions loaded", time.perf_counter() - start)

    files = result.files
    files.update(tables.write_tables(out, finished, stats_df, reference, metrics, probes, health))
    files.update(_write_plots(out, client, finished, deltas, stats_df, predictions, splits, reference, warnings))
    log.debug("%.2f s: tables and plots written", time.perf_counter() - start)
    run_columns = ["run_id", "status", *RUN_TAGS, "failed", "n_train", "n_val", "n_test", "num_bins", "epochs",
                   *[metric_key(m) for m in TEST_METRICS], *FIT_METRICS]
    for name, frame in (("runs", pd.concat([finished, probes])[run_columns]), ("pairs", deltas), ("stats", stats_df),
                        ("across_datasets", across), ("missing", missing), ("health", health)):
        files[f"{name}.csv"] = out / f"{name}.csv"
        frame.to_csv(files[f"{name}.csv"], index=False)

    result.n_runs, result.n_unfinished = len(finished), int((placeable["status"] != "FINISHED").sum())
    result.n_missing, result.n_pairs, result.n_stats_rows = len(missing), len(deltas), len(stats_df)
    result.duration_s = time.perf_counter() - start
    files["provenance.json"] = write_provenance(
        out, command if command is not None else sys.argv, grid=grid, tracking_uri_kind=uri_kind(uri),
        reference=reference, metrics=list(metrics), rope=rope, n_runs_finished=result.n_runs,
        n_runs_unfinished=result.n_unfinished, n_missing=result.n_missing, n_pairs=result.n_pairs,
        n_stats_rows=result.n_stats_rows, warnings=warnings, duration_s=round(result.duration_s, 3))
    log.info("report of grid %r written to %s in %.1f s", grid, out, result.duration_s)
    return result


def _rope(finished: pd.DataFrame, warnings: list[str]) -> float:
    """The grid's ``rope`` param (the default when the runs predate it)."""
    values = finished["rope"].dropna().unique()
    if len(values) > 1:
        warn(warnings, f"runs disagree on rope ({sorted(values)}); the largest is used")
    return float(max(values)) if len(values) else stats.DEFAULT_ROPE


def _write_plots(out: Path, client: MlflowClient, finished: pd.DataFrame, deltas: pd.DataFrame,
                 stats_df: pd.DataFrame, predictions: dict, splits: pd.Series, reference: str,
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
    first = next(iter(splits.index), None)
    panels = {head: predictions[(first, head)] for head in heads if (first, head) in predictions}
    if panels:
        save("scatter.png", plots.scatter, panels, first, int(splits[first]), colors)
    curves = load_learning_curves(client, finished, splits)
    if not curves.empty:
        save("learning_curves.png", plots.learning_curves, curves, colors, len(splits))
    k_table = k_ablation_table(finished)
    if not k_table.empty:
        save("k_ablation.png", plots.k_ablation, k_table)
    scores = rank_blocks(finished, warnings)
    if scores is not None:
        ranks = stats.average_ranks(scores)
        cd = stats.nemenyi_critical_difference(scores.shape[1], len(scores))
        save("critical_difference.png", plots.critical_difference, ranks, cd, stats.friedman_test(scores),
             len(scores))
    return written


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


__all__ = ["ReportError", "ReportResult", "build_report", "k_ablation_table"]
