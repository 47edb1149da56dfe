"""Paired comparisons of heads: per-split differences and the statistics of ``stats.csv``.

For a cell (backbone, dataset, test dataset, regime) and a head pair (A, B) from the grid's ``compare``
list, the differences ``d_js = metric_A − metric_B`` of the runs where both heads succeeded (split j,
seed s) feed :mod:`benchmark.analysis.stats`; ``pairs.csv`` holds their seed averages per split.

``stats.csv`` has one row per (cell, head pair, metric):

* ``pair_key, backbone, dataset, test_dataset, regime`` — the cell; ``head_a, head_b, metric``;
* ``n_splits`` — splits J where both heads have a successful run; ``n_seeds`` — seeds per split (most
  common); ``n_train, n_test`` — set sizes of a split; ``failures_a, failures_b`` — runs of each head that
  failed (left out of the differences, tested on their own in ``p_failures``);
* ``mean_a, mean_b`` — mean over splits of each head's metric; ``mean_delta, median_delta, std_delta`` —
  of the per-split differences;
* ``ci_low, ci_high`` — 95 % CI of the mean difference matching the corrected test
  (:func:`benchmark.analysis.stats.corrected_resampled_ci`);
* ``t_corrected, p_corrected`` — corrected resampled t-test (Nadeau & Bengio 2003), unadjusted;
* ``p_naive`` and ``p_wilcoxon`` — DESCRIPTIVE ONLY, for comparison with published practice: both ignore
  that the splits' training sets overlap and are anti-conservative (``results/calibration``);
* ``p_holm`` — ``p_corrected`` Holm-adjusted over the within-dataset cells and head pairs of the grid (per
  metric); ``significant`` — ``p_holm < 0.05``, the only significance mark of the tables and plots;
* ``rope, p_below, p_rope, p_above, verdict`` — correlated Bayesian t-test (Corani & Benavoli 2015):
  posterior probabilities that Δ < −rope, |Δ| ≤ rope, Δ > rope and the verdict at 0.95 (``a better``,
  ``b better``, ``equivalent``, ``undecided``);
* ``var_split, var_seed`` — split-to-split variance of the true per-split difference and the training
  noise of one run's difference (NaN with one seed per split); ``mde80`` — the smallest true mean
  difference the test detects with 80 % power at α = .05 with this grid's J, split sizes and spread;
* ``descriptive`` and ``caveat`` — cross-dataset cells (one fixed test set in every split), whose
  p-values, interval, verdict and MDE are descriptive only: kept out of the Holm family, never marked;
* ``boot_split, boot_ci_low, boot_ci_high`` — SRCC rows: paired bootstrap 95 % CI of ΔSRCC on one split's
  test predictions (the lowest split every head ran, a rule blind to scores), resampling whole reference
  images where predictions carry them; it holds one trained model per head fixed, so it shows test-set
  sampling noise only, not training or split noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmark.analysis import stats
from benchmark.analysis.report_data import CELL_COLUMNS, ReportError, Scores, warn

ALPHA = 0.05
BOOT_COLUMNS = ["boot_split", "boot_ci_low", "boot_ci_high"]
STATS_COLUMNS = [*CELL_COLUMNS, "head_a", "head_b", "metric", "n_splits", "n_seeds", "n_train", "n_test",
                 "failures_a", "failures_b", "mean_a", "mean_b", "mean_delta", "median_delta", "std_delta",
                 "ci_low", "ci_high", "t_corrected", "p_corrected", "p_naive", "p_wilcoxon", "p_holm", "significant",
                 "rope", "p_below", "p_rope", "p_above", "verdict", "var_split", "var_seed", "mde80", "descriptive",
                 "caveat", *BOOT_COLUMNS]
PAIR_COLUMNS = [*CELL_COLUMNS, "split", "head_a", "head_b", "metric", "n_seeds", "value_a", "value_b", "delta"]


def run_deltas(scores: Scores, head_a: str, head_b: str, metric: str) -> pd.DataFrame:
    """Per (pair_key, split, seed) where both heads succeeded: both values and the difference A − B."""
    wide = scores.wide(metric, per_seed=True)
    if head_a not in wide or head_b not in wide:
        return pd.DataFrame(columns=["pair_key", "split", "seed", "value_a", "value_b", "delta"])
    both = wide[[head_a, head_b]].dropna().set_axis(["value_a", "value_b"], axis=1).reset_index()
    return both.assign(delta=both["value_a"] - both["value_b"])


def paired_deltas(scores: Scores, pairs: Sequence[tuple[str, str]], metrics: Sequence[str]) -> pd.DataFrame:
    """Per-split paired values (``pairs.csv``): the seeds where both heads succeeded, averaged within the split."""
    frames = []
    for metric in metrics:
        for head_a, head_b in pairs:
            runs = run_deltas(scores, head_a, head_b, metric)
            per_split = runs.groupby(["pair_key", "split"]).agg(
                n_seeds=("delta", "size"), value_a=("value_a", "mean"), value_b=("value_b", "mean")).reset_index()
            frames.append(per_split.assign(head_a=head_a, head_b=head_b, metric=metric,
                                           delta=per_split["value_a"] - per_split["value_b"]))
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    return pd.concat(frames, ignore_index=True).merge(scores.cells, on="pair_key")[PAIR_COLUMNS]


def _spread(runs: pd.DataFrame, d: np.ndarray) -> tuple[float, float, float, int]:
    """(var_split, var_seed, SD of the split-averaged difference, seeds per split) of one comparison."""
    seeds = int(runs.groupby("split").size().mode().iloc[0]) if len(runs) else 1
    sd = float(d.std(ddof=1)) if d.size > 1 else np.nan
    if runs["split"].nunique() < 2:
        return np.nan, np.nan, sd, seeds
    components = stats.split_seed_variance(runs)
    if np.isnan(components.var_seed):
        return np.nan, np.nan, sd, seeds
    return components.var_split, components.var_seed, components.sd(seeds), seeds


def cell_stats(scores: Scores, pairs: pd.DataFrame, compare: Sequence[tuple[str, str]], sizes: pd.DataFrame,
               warnings: list[str], rope: float) -> pd.DataFrame:
    """One row per (cell, head pair, metric): the columns of ``stats.csv`` (module docstring) but the bootstrap's.

    ``sizes``: per pair_key, the mean ``n_train`` and ``n_test`` of its runs.
    """
    failures = scores.runs[scores.runs["failed"]].groupby(["pair_key", "head"]).size().to_dict()
    cells = scores.cells.set_index("pair_key")[CELL_COLUMNS[1:]].to_dict("index")
    rows = []
    for (pair_key, head_a, head_b, metric), group in pairs.groupby(["pair_key", "head_a", "head_b", "metric"],
                                                                    sort=False):
        d = group["delta"].to_numpy(dtype=float)
        n_train, n_test = sizes.loc[pair_key, "n_train"], sizes.loc[pair_key, "n_test"]
        cell = cells[pair_key]
        caveat = stats.cross_dataset_caveat(cell["dataset"], cell["test_dataset"])
        runs = run_deltas(scores, head_a, head_b, metric)
        var_split, var_seed, sd, seeds = _spread(runs[runs["pair_key"] == pair_key], d)
        row = {"pair_key": pair_key, **cell, "head_a": head_a, "head_b": head_b, "metric": metric,
               "n_splits": d.size, "n_seeds": seeds, "n_train": n_train, "n_test": n_test,
               "failures_a": failures.get((pair_key, head_a), 0), "failures_b": failures.get((pair_key, head_b), 0),
               "mean_a": group["value_a"].mean(), "mean_b": group["value_b"].mean(), "mean_delta": d.mean(),
               "median_delta": np.median(d), "std_delta": d.std(ddof=1) if d.size > 1 else np.nan,
               "rope": rope, "var_split": var_split, "var_seed": var_seed, "descriptive": caveat is not None,
               "caveat": caveat or ""}
        row.update(dict.fromkeys(["ci_low", "ci_high", "t_corrected", "p_corrected", "p_naive", "p_below",
                                  "p_rope", "p_above", "mde80"], np.nan))
        row["verdict"] = ""
        if d.size >= 2 and n_train > 0 and n_test > 0:
            row["t_corrected"], row["p_corrected"] = stats.corrected_resampled_ttest(d, n_train, n_test)
            row["ci_low"], row["ci_high"] = stats.corrected_resampled_ci(d, n_train, n_test, 1 - ALPHA)
            row["p_naive"] = stats.naive_paired_ttest(d)[1]
            posterior = stats.bayesian_correlated_ttest(d, n_train, n_test, rope)
            row["p_below"], row["p_rope"], row["p_above"] = posterior
            row["verdict"] = stats.verdict(*posterior)
            if np.isfinite(sd) and sd > 0:
                row["mde80"] = stats.mde80(sd, d.size, n_test / n_train, ALPHA)
        elif metric == "srcc":
            warn(warnings, f"{pair_key} {head_a} vs {head_b}: {d.size} complete split(s) or unknown "
                           "n_train/n_test params; no t-test")
        if caveat and metric == "srcc":
            warn(warnings, f"{pair_key}: {caveat}")
        row["p_wilcoxon"] = stats.wilcoxon_p(d)
        rows.append(row)
    out = pd.DataFrame(rows, columns=STATS_COLUMNS[:-len(BOOT_COLUMNS)])
    if out.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    family = out["p_corrected"].where(~out["descriptive"].astype(bool))
    out["p_holm"] = family.groupby(out["metric"]).transform(lambda p: stats.holm(p.to_numpy()))
    out["significant"] = out["p_holm"] < ALPHA
    return out


def _aligned_predictions(panels: dict[str, pd.DataFrame],
                         heads: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
    """MOS, each head's predictions and (when logged) the reference of the images every head scored.

    Raises
    ------
    ReportError
        When fewer than 3 images are shared or a shared image has a different MOS in two heads' files.
    """
    first = panels[heads[0]]
    merged = first[["image", "mos", *(["ref"] if "ref" in first else [])]]
    for head in heads:
        merged = merged.merge(panels[head][["image", "mos", "pred"]].rename(
            columns={"mos": f"mos_{head}", "pred": head}), on="image")
    if len(merged) < 3 or any(not np.allclose(merged["mos"], merged[f"mos_{h}"]) for h in heads):
        raise ReportError("the heads' test predictions at the chosen split do not share the same images and MOS")
    groups = merged["ref"].astype(str).to_numpy() if "ref" in merged else None
    return merged["mos"].to_numpy(), {h: merged[h].to_numpy() for h in heads}, groups


def add_bootstrap(stats_df: pd.DataFrame, predictions: dict[tuple[str, str], pd.DataFrame], splits: pd.Series,
                  warnings: list[str]) -> None:
    """Paired bootstrap CIs of ΔSRCC on each cell's chosen split (srcc rows of ``stats_df``, in place).

    All head pairs of a cell share one set of resamples (:func:`benchmark.analysis.stats.paired_bootstrap_srcc_cis`),
    of whole references when the predictions name them (test images cluster by reference), else of
    images; a pair whose predictions are missing or constant gets no interval and a warning.
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
                mos, heads, groups = _aligned_predictions(panels, list(dict.fromkeys(h for p in pairs for h in p)))
                if groups is None:
                    warn(warnings, f"{pair_key}: predictions.csv names no references; the bootstrap resamples "
                                   "images, which understates the spread when test images share references")
                intervals = stats.paired_bootstrap_srcc_cis(mos, heads, pairs, confidence=1 - ALPHA, groups=groups)
            except (ReportError, stats.StatsInputError) as err:
                warn(warnings, f"{pair_key}: {err}; no bootstrap CI")
                continue
        intervals = {pair: ci for pair, ci in intervals.items() if not np.isnan(ci).any()}
        lacking = [f"{a} vs {b}" for a, b in wanted if (a, b) not in intervals]
        if lacking:
            warn(warnings, f"{pair_key}: no bootstrap CI for {', '.join(lacking)} (predictions at the chosen split "
                           "missing or constant)")
        for i, pair in zip(rows.index, wanted, strict=True):
            if pair in intervals:
                stats_df.loc[i, BOOT_COLUMNS] = [splits[pair_key], *intervals[pair]]


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


def rank_blocks(scores: Scores, warnings: list[str]) -> pd.DataFrame | None:
    """Test SRCC per independent block (backbone, dataset, test dataset, regime; splits averaged) and head,
    for the Friedman test and the critical-difference diagram; None, with a warning saying why, when
    there are too few blocks or heads for the test to mean anything."""
    blocks, note = stats.independent_blocks(scores.per_split, "test_srcc", block=CELL_COLUMNS[1:], seed=None)
    if note:
        warn(warnings, f"critical-difference diagram: {note}" + (" (it is not drawn: splits share their training "
                                                                 "data, so they are not independent blocks)"
                                                                 if blocks is None else ""))
    return blocks


__all__ = ["ALPHA", "BOOT_COLUMNS", "PAIR_COLUMNS", "STATS_COLUMNS", "across_datasets", "add_bootstrap",
           "cell_stats", "paired_deltas", "rank_blocks", "run_deltas"]
