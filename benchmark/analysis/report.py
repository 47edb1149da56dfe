"""Report of a grid: statistics, tables and plots from the MLflow store (no retraining, no torch).

:func:`build_report` loads the grid as it was run (:class:`benchmark.schema.GridRecord`, recorded on its
experiment: the expected cells, the heads, the pairs to compare and the ROPE) and its runs as one
:class:`benchmark.analysis.report_data.ReportData`, which every later step takes (its ``scores``: the per-run
/ per-split tables), runs the tests of :mod:`benchmark.analysis.stats` on each compared pair, and writes CSV
files, paper-style tables (:mod:`benchmark.analysis.tables`), plots (:mod:`benchmark.analysis.plots`) and
``provenance.json`` into ``results/<grid>/``. Every expected unit without a usable run is listed in
``missing.csv`` and reported as a warning.

Files: ``runs.csv`` (the usable result and probe runs, each result with its selected trial and every
trial's val SRCC), ``pairs.csv`` (per-split paired values), ``stats.csv`` (per cell and head pair: tests,
Bayesian verdicts, power), ``across_datasets.csv`` (Wilcoxon over datasets of the per-dataset mean
deltas, with the small-N caveat), ``missing.csv``, ``health.csv`` (heads vs the linear probe; tuning
selections vs the budget's edges), ``table_<metric>.{md,tex,csv}``, ``summary_pairs.{md,csv}``,
PNG plots and ``provenance.json``.

``stats.csv`` is described in :mod:`benchmark.analysis.comparisons`; ``health.csv`` in :mod:`benchmark.analysis.health`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.analysis import plots, stats, tables
from benchmark.analysis.comparisons import (
    across_datasets,
    cell_stats,
    paired_deltas,
    primary_rows,
    rank_blocks,
)
from benchmark.analysis.health import health_check
from benchmark.analysis.html import PAGE, ReportPage, write_html
from benchmark.analysis.report_data import (
    ReportData,
    ReportError,
    load_learning_curves,
    load_predictions,
    load_report_data,
    warn,
)
from benchmark.metrics import METRIC_NAMES
from benchmark.provenance import write_provenance
from benchmark.schema import (COLUMNS, FIT_COLUMNS, HEAD_PARAM_PREFIX, KILLED, RUNNING, SIZE_COLUMNS, TUNED_PREFIX, VAL_SRCC,
                              test_metric)
from benchmark.store import resolve_tracking_uri, uri_kind

log = logging.getLogger(__name__)

RUN_COLUMNS = [COLUMNS.run_id, COLUMNS.status, COLUMNS.cell_key, COLUMNS.pair_key, COLUMNS.backbone, COLUMNS.dataset,
               COLUMNS.test_dataset, COLUMNS.regime, COLUMNS.split, COLUMNS.seed, COLUMNS.head, COLUMNS.head_type,
               COLUMNS.role, "failed", COLUMNS.failure, *SIZE_COLUMNS, COLUMNS.trial, *FIT_COLUMNS,
               *(test_metric(m) for m in METRIC_NAMES)]
"""Leading columns of ``runs.csv`` (head hyper-parameters, tuned values and every trial's val SRCC follow)."""


@dataclass
class ReportResult:
    """What :func:`build_report` wrote and what it found."""

    grid: str
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    n_runs: int = 0
    """Usable result runs (FINISHED, or failed by their head)."""
    n_unfinished: int = 0
    """Result runs in the store that are RUNNING, KILLED or ended with their process (ignored)."""
    n_missing: int = 0
    """Expected units without a usable run."""
    n_pairs: int = 0
    """Rows of ``pairs.csv`` (per-split paired differences)."""
    n_stats_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def build_report(grid: str | None = None, tracking_uri: str | None = None, out_dir: Path | None = None,
                 metrics: Sequence[str] = ("srcc", "plcc"), command: str | Sequence[str] | None = None,
                 pairs: Sequence[tuple[str, str]] | None = None,
                 split_correlation: float | None = None) -> ReportResult:
    """Write the statistics, tables, plots and provenance of a grid.

    Parameters
    ----------
    grid : str or None
        Grid (experiment) name; ``None`` picks the only grid in the store.
    tracking_uri : str or None
        MLflow tracking URI (default: :func:`benchmark.store.resolve_tracking_uri`).
    out_dir : Path or None
        Output folder (default ``results/<grid>``).
    metrics : sequence of str, default ("srcc", "plcc")
        Test metrics to test and tabulate (``srcc`` is always tested: the summary and plots use it).
    command : str or sequence of str, optional
        Command line recorded in ``provenance.json`` (default ``sys.argv``).
    pairs : sequence of (str, str), optional
        Head pairs (A, B) to test instead of the grid's ``compare`` list.
    split_correlation : float, optional
        The ``r`` of the tests instead of the grid's ``split_correlation`` (default: its value, else each
        cell's ``n_test / n_train``), for a sensitivity analysis.

    Returns
    -------
    ReportResult
        Written files, counts and warnings (the warnings are also logged).

    Raises
    ------
    ReportError
        On an unknown grid (the message lists the grids), a store with several grids and no ``grid``,
        an unknown metric or head, or a grid without usable runs.
    """
    start = time.perf_counter()
    unknown = sorted(set(metrics) - set(METRIC_NAMES))
    if unknown:
        raise ReportError(f"unknown metric(s) {unknown}; choose from {', '.join(METRIC_NAMES)}.")
    metrics = tuple(dict.fromkeys(("srcc", *metrics)))
    uri = resolve_tracking_uri(tracking_uri)
    warnings: list[str] = []
    data = load_report_data(uri, grid, warnings, pairs, split_correlation)
    name, record, scores, missing = data.name, data.record, data.scores, data.missing
    out = Path(out_dir) if out_dir is not None else Path("results") / name
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(grid=name, out_dir=out, warnings=warnings)
    if len(missing):
        warn(warnings, f"{len(missing)} expected unit(s) have no usable run (see missing.csv); statistics use only "
                       "the splits where both heads of a pair succeeded")
    if not record.compare:
        warn(warnings, f"no head pairs to compare (heads: {', '.join(record.heads)}); no statistics, forest or "
                       "slope plot")
    deltas = paired_deltas(scores, record.compare, metrics)
    stats_df = cell_stats(scores, deltas, data.sizes, warnings, record)
    predictions = load_predictions(data, data.splits.iloc[:1], warnings)
    across = across_datasets(stats_df, warnings)
    primary = primary_rows(stats_df)
    blocks = rank_blocks(scores, warnings)
    health = health_check(data, warnings)
    log.debug("%.2f s: runs, statistics and predictions loaded", time.perf_counter() - start)

    files = result.files
    paper = {metric: tables.paper_table(data, primary, metric, health) for metric in metrics}
    paper = {metric: table for metric, table in paper.items() if not table.empty}
    files.update(tables.write_tables(out, paper, tables.pairs_summary(data, primary), record.reference))
    files.update(_write_plots(out, data, deltas, primary, predictions, blocks, warnings))
    log.debug("%.2f s: tables and plots written", time.perf_counter() - start)
    frames = {"runs": run_table(data), "pairs": deltas, "stats": stats_df,
              "across_datasets": across, "missing": missing, "health": health}
    if blocks is not None:
        frames["ranks"] = stats.pairwise_signed_rank_holm(blocks)
    for file_name, frame in frames.items():
        files[f"{file_name}.csv"] = out / f"{file_name}.csv"
        frame.to_csv(files[f"{file_name}.csv"], index=False)

    result.n_runs, result.n_missing = len(data.usable), len(missing)
    result.n_unfinished = int(data.runs[COLUMNS.status].isin([RUNNING, KILLED]).sum())
    result.n_pairs, result.n_stats_rows = len(deltas), len(stats_df)
    result.duration_s = time.perf_counter() - start
    files["provenance.json"] = write_provenance(
        out, command if command is not None else sys.argv, grid=name, tracking_uri_kind=uri_kind(uri),
        experiment_id=data.experiment_id, reference=record.reference, compare=[list(p) for p in record.compare],
        metrics=list(metrics), rope=record.rope, split_correlation=record.split_correlation,
        n_runs_usable=result.n_runs, n_runs_unfinished=result.n_unfinished,
        n_missing=result.n_missing, n_pairs=result.n_pairs, n_stats_rows=result.n_stats_rows, warnings=warnings,
        duration_s=round(result.duration_s, 3))
    page = ReportPage(data, stats_df, health, paper, list(files), warnings,
                      json.loads(files["provenance.json"].read_text()))
    files[PAGE] = write_html(out, page)
    log.info("report of grid %r written to %s in %.1f s", name, out, result.duration_s)
    return result


def run_table(data: ReportData) -> pd.DataFrame:
    """``runs.csv``: result and probe runs, each result with its hyper-parameters, its selected trial's tuned
    values and every trial's val SRCC (columns ``val_srcc[<trial>]``)."""
    frame, trials = pd.concat([data.usable, data.probe_runs], ignore_index=True), data.trials
    extra = [c for c in frame.columns if c.startswith((HEAD_PARAM_PREFIX, TUNED_PREFIX))]
    if len(trials):
        val = trials.pivot_table(index=COLUMNS.parent_run_id, columns=COLUMNS.trial, values=COLUMNS.best_val_srcc,
                                 aggfunc="last")
        val.columns = [f"{VAL_SRCC}[{c}]" for c in val.columns]
        frame = frame.merge(val, left_on=COLUMNS.run_id, right_index=True, how="left")
        extra += list(val.columns)
    return frame[[*RUN_COLUMNS, COLUMNS.head_init, *extra]]


def _write_plots(out: Path, data: ReportData, deltas: pd.DataFrame, stats_df: pd.DataFrame, predictions: dict,
                 blocks: pd.DataFrame | None, warnings: list[str]) -> dict[str, Path]:
    """Every plot whose data exists; returns {file name: path}."""
    written: dict[str, Path] = {}
    grid, splits, trials = data.record, data.splits, data.trials
    heads = data.scores.heads
    colors = plots.head_colors(heads)

    def save(file_name: str, draw, *args) -> None:
        written[file_name] = out / file_name
        draw(*args, written[file_name])

    if not stats_df.empty:
        save("forest_srcc.png", plots.forest, stats_df[stats_df["metric"] == "srcc"], "srcc")
        ref_pairs = deltas[(deltas["metric"] == "srcc") & (deltas["head_b"] == grid.reference)]
        if not ref_pairs.empty:
            save("slope_srcc.png", plots.slope, ref_pairs, "srcc", colors)
    first = next(iter(splits.index), None)
    panels = {head: predictions[(first, head)] for head in heads if (first, head) in predictions}
    if panels:
        save("scatter.png", plots.scatter, panels, first, int(splits[first]), colors)
    curves = load_learning_curves(data)
    if not curves.empty:
        save("learning_curves.png", plots.learning_curves, curves, colors, len(splits))
    for setting, values in grid.tuning.items():
        if len(values) > 1 and len(trials):
            save(f"tuning_{setting}.png", plots.tuning, trials, setting, colors)
    k_table = k_ablation_table(data)
    if not k_table.empty:
        save("k_ablation.png", plots.k_ablation, k_table)
    draw, reason = stats.critical_difference_decision(blocks)
    if blocks is not None and not draw:
        warn(warnings, f"critical-difference diagram: {reason}")
    if draw:
        ranks = stats.average_ranks(blocks)
        cd = stats.nemenyi_critical_difference(blocks.shape[1], len(blocks))
        save("critical_difference.png", plots.critical_difference, ranks, cd, stats.friedman_test(blocks), len(blocks))
    return written


def k_ablation_table(data: ReportData) -> pd.DataFrame:
    """SRCC mean and std over splits per (head_type, pair_key, num_bins), for head types run with more than
    one ``num_bins`` (every run logs its head's hyper-parameters, defaults included); empty when none varies."""
    usable = data.usable
    column, head_type, srcc = f"{HEAD_PARAM_PREFIX}num_bins", COLUMNS.head_type, COLUMNS.test_srcc
    if column not in usable:
        return pd.DataFrame()
    bins = usable.drop_duplicates(COLUMNS.head).set_index(COLUMNS.head)[[head_type, column]].dropna()
    per_split = data.scores.per_split.merge(bins, left_on=COLUMNS.head, right_index=True).dropna(subset=[srcc])
    varied = per_split.groupby(head_type)[column].nunique()
    per_split = per_split[per_split[head_type].isin(varied[varied > 1].index)]
    table = per_split.groupby([head_type, COLUMNS.pair_key, column])[srcc].agg(["mean", "std", "size"])
    return table.rename(columns={"size": "n_splits"}).reset_index().rename(columns={column: "num_bins"})


__all__ = ["RUN_COLUMNS", "ReportError", "ReportResult", "build_report", "k_ablation_table", "run_table"]
