"""Report of a grid: statistics, tables and plots from the MLflow store (no retraining).

:func:`build_report` reads the runs of a grid (:mod:`benchmark.report_data`), pairs the heads of each
matched cell split by split (seeds averaged within a split first), runs the tests of
:mod:`benchmark.stats`, and writes CSV files, paper-style tables (:mod:`benchmark.tables`), plots
(:mod:`benchmark.plots`) and ``provenance.json`` into ``results/<grid>/``. Only FINISHED runs count;
every expected (cell, head) run without one is listed in ``missing.csv`` and reported as a warning.

Files: ``runs.csv`` (FINISHED runs used), ``pairs.csv`` (per-split paired values), ``stats.csv``
(below), ``across_datasets.csv`` (Wilcoxon over datasets of the per-dataset mean deltas, with the
small-N caveat), ``missing.csv``, ``table_<metric>.{md,tex,csv}``, ``summary_dor_variants.{md,csv}``,
PNG plots and ``provenance.json``.

``stats.csv`` has one row per (cell, head pair, metric), the difference taken as head A − head B:

* ``pair_key, backbone, dataset, test_dataset, regime`` — the cell; ``head_a, head_b, metric``;
* ``n_splits`` — splits J where both heads FINISHED; ``n_train, n_test`` — set sizes of a split;
* ``mean_a, mean_b`` — mean over splits of each head's test metric; ``mean_delta, median_delta,
  std_delta`` — of the per-split differences d_j;
* ``ci_low, ci_high`` — 95 % CI of the mean difference matching the corrected test
  (:func:`benchmark.stats.corrected_resampled_ci`);
* ``t_corrected, p_corrected`` — corrected resampled t-test (Nadeau & Bengio 2003), unadjusted; the
  only per-split test whose type-I error is near 5 % (0.040 in ``results/calibration``);
* ``p_naive`` (plain paired t-test) and ``p_wilcoxon`` (Wilcoxon signed-rank on d_j) — DESCRIPTIVE
  ONLY, for comparison with published practice: both ignore that the training sets of the splits
  overlap and are anti-conservative (type-I error 0.254 and 0.246 at α = .05 over 1000 simulated null
  grids, ``results/calibration``); never read them as evidence of a difference;
* ``p_holm`` — ``p_corrected`` Holm-adjusted over all cells and head pairs of the grid (per metric);
  ``significant`` — ``p_holm < 0.05``, the only significance mark used in the tables and plots;
* ``boot_split, boot_ci_low, boot_ci_high`` — SRCC rows only: paired bootstrap 95 % BCa CI of ΔSRCC on
  the test predictions of one split, the median split of the reference head.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from benchmark import plots, stats, tables
from benchmark.health import health_check, health_warnings
from benchmark.provenance import write_provenance
from benchmark.report_data import (
    CELL_COLUMNS,
    ReportError,
    find_missing,
    load_learning_curves,
    load_predictions,
    load_runs,
    median_splits,
    select_experiment,
    split_values,
    usable_runs,
    warn,
)
from benchmark.schema import FIT_METRICS, ROLE_REFERENCE, RUN_TAGS, TEST_METRICS, metric_key
from benchmark.tracking import resolve_tracking_uri, uri_kind

log = logging.getLogger(__name__)

STATS_COLUMNS = [*CELL_COLUMNS, "head_a", "head_b", "metric", "n_splits", "n_train", "n_test", "mean_a", "mean_b",
                 "mean_delta", "median_delta", "std_delta", "ci_low", "ci_high", "t_corrected", "p_corrected",
                 "p_naive", "p_wilcoxon", "p_holm", "significant", "boot_split", "boot_ci_low", "boot_ci_high"]
BOOT_COLUMNS = ["boot_split", "boot_ci_low", "boot_ci_high"]
DOR, DOR_SEED = "dor", "dor-seed"
ALPHA = 0.05


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


def cell_stats(pairs: pd.DataFrame, finished: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """One row per (cell, head pair, metric): means, CI, corrected/naive t-tests, Wilcoxon, Holm.

    The columns are those of ``stats.csv`` (module docstring) but the bootstrap ones.
    """
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
            row["ci_low"], row["ci_high"] = stats.corrected_resampled_ci(d, n_train, n_test, 1 - ALPHA)
            row["p_naive"] = stats.naive_paired_ttest(d)[1]
        elif metric == "srcc":
            warn(warnings, f"{pair_key} {head_a} vs {head_b}: {d.size} complete split(s) or unknown "
                           "n_train/n_test params; no t-test")
        row["p_wilcoxon"] = stats.wilcoxon_p(d)
        rows.append(row)
    out = pd.DataFrame(rows, columns=STATS_COLUMNS[:-len(BOOT_COLUMNS) - 2])
    if out.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    out["p_holm"] = out.groupby("metric")["p_corrected"].transform(lambda p: stats.holm(p.to_numpy()))
    out["significant"] = out["p_holm"] < ALPHA
    return out


def _aligned_predictions(panels: dict[str, pd.DataFrame],
                         heads: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """MOS and each head's predictions on the images every head scored (merged on ``image``).

    Raises
    ------
    ReportError
        When fewer than 3 images are shared or a shared image has a different MOS in two heads' files.
    """
    merged = panels[heads[0]][["image", "mos"]]
    for head in heads:
        merged = merged.merge(panels[head][["image", "mos", "pred"]].rename(
            columns={"mos": f"mos_{head}", "pred": head}), on="image")
    if len(merged) < 3 or any(not np.allclose(merged["mos"], merged[f"mos_{h}"]) for h in heads):
        raise ReportError("the heads' test predictions at the median split do not share the same images and MOS")
    return merged["mos"].to_numpy(), {h: merged[h].to_numpy() for h in heads}


def add_bootstrap(stats_df: pd.DataFrame, predictions: dict[tuple[str, str], pd.DataFrame], medians: pd.Series,
                  warnings: list[str]) -> None:
    """Paired bootstrap CIs of ΔSRCC on each cell's median split (srcc rows of ``stats_df``, in place).

    All head pairs of a cell share one set of resamples (:func:`benchmark.stats.paired_bootstrap_srcc_cis`);
    a pair whose predictions are missing or constant gets no interval and a warning.
    """
    stats_df[BOOT_COLUMNS] = np.nan
    srcc = stats_df[stats_df["metric"] == "srcc"]
    for pair_key, rows in srcc.groupby("pair_key", sort=False):
        panels = {head: frame for (key, head), frame in predictions.items() if key == pair_key}
        wanted = list(zip(rows["head_a"], rows["head_b"], strict=True))
        pairs = [(a, b) for a, b in wanted if a in panels and b in panels]
        intervals: dict[tuple[str, str], tuple[float, float]] = {}
        if pairs:
            try:
                mos, heads = _aligned_predictions(panels, list(dict.fromkeys(h for pair in pairs for h in pair)))
                intervals = stats.paired_bootstrap_srcc_cis(mos, heads, pairs, confidence=1 - ALPHA)
            except (ReportError, stats.StatsInputError) as err:
                warn(warnings, f"{pair_key}: {err}; no bootstrap CI")
                continue
        intervals = {pair: ci for pair, ci in intervals.items() if not np.isnan(ci).any()}
        lacking = [f"{a} vs {b}" for a, b in wanted if (a, b) not in intervals]
        if lacking:
            warn(warnings, f"{pair_key}: no bootstrap CI for {', '.join(lacking)} (predictions at the median "
                           "split missing or constant)")
        for i, pair in zip(rows.index, wanted, strict=True):
            if pair in intervals:
                stats_df.loc[i, BOOT_COLUMNS] = [medians[pair_key], *intervals[pair]]


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
            warn(warnings, f"across datasets: {caveat}")
    return pd.DataFrame(rows, columns=[*keys, "n_datasets", "datasets", "mean_delta", "n_positive",
                                       "p_wilcoxon", "caveat"])


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
        MLflow tracking URI (default: :func:`benchmark.tracking.resolve_tracking_uri`).
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
    nan_metrics = int(finished[[metric_key(m) for m in metrics]].isna().to_numpy().sum())
    if nan_metrics:
        warn(warnings, f"{nan_metrics} test metric value(s) of FINISHED runs are NaN (collapsed models?); "
                       "those splits are left out of the pairs that need them")

    unknown_heads = sorted({h for pair in pairs or () for h in pair} - set(heads))
    if unknown_heads:
        raise ReportError(f"--pair names head(s) without FINISHED runs: {', '.join(unknown_heads)}; "
                          f"heads: {', '.join(heads)}")
    pairs = list(pairs) if pairs else comparisons(heads, reference)
    if not pairs:
        warn(warnings, f"no head pairs to compare (heads: {', '.join(heads)}); no statistics, forest or slope plot")
    deltas = paired_deltas(finished, pairs, metrics)
    stats_df = cell_stats(deltas, finished, warnings)
    medians = median_splits(finished, reference if reference in heads else heads[0])
    predictions = load_predictions(uri, finished, medians, warnings)
    add_bootstrap(stats_df, predictions, medians, warnings)
    across = across_datasets(stats_df, warnings)
    health = health_check(finished, probes)
    for message in health_warnings(health):
        warn(warnings, message)
    log.debug("%.2f s: runs, statistics and predictions loaded", time.perf_counter() - start)

    files = result.files
    files.update(tables.write_tables(out, finished, stats_df, reference, metrics, probes, health))
    files.update(_write_plots(out, client, finished, deltas, stats_df, predictions, medians, reference, warnings))
    log.debug("%.2f s: tables and plots written", time.perf_counter() - start)
    run_columns = ["run_id", "status", *RUN_TAGS, "n_train", "n_val", "n_test", "num_bins", "epochs",
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
    curves = load_learning_curves(client, finished, medians)
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
            warn(warnings, "fewer than 2 (cell, split) blocks where every head FINISHED; no critical-difference plot")
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


__all__ = ["ReportError", "ReportResult", "add_bootstrap", "build_report", "cell_stats", "comparisons",
           "k_ablation_table", "paired_deltas"]
