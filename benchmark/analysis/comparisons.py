"""Paired comparisons of heads: per-split differences and the statistics of ``stats.csv``.

For a cell (backbone, dataset, test dataset, regime) and a head pair (A, B) from the grid's ``compare``
list, the differences ``d_js = metric_A − metric_B`` of the runs where both heads succeeded (split j,
seed s) feed :mod:`benchmark.analysis.stats`; ``pairs.csv`` holds their seed averages per split.

``stats.csv`` has one row per (cell, head pair, metric, analysis):

* ``pair_key, backbone, dataset, test_dataset, regime`` — the cell; ``head_a, head_b, metric``;
* ``analysis`` — ``complete-case`` (the answer: the runs where both heads succeeded) or ``worst-rank``
  (sensitivity, only for pairs with failures: every failed run scored as the cell's worst successful run;
  descriptive);
* ``n_splits`` — splits J where both heads have a successful run; ``n_seeds`` — seeds per split (most
  common); ``n_train, n_test`` — set sizes of a split; ``failures_a, failures_b`` — runs of each head that
  failed (left out of the differences); ``p_failures`` — exact McNemar test of the two heads' failure
  indicators over their paired runs;
* ``mean_a, mean_b`` — mean over splits of each head's metric; ``mean_delta, median_delta, std_delta`` —
  of the per-split (seed-averaged) differences;
* ``test`` — which test produced ``se_mean, df, t, p, ci_low, ci_high`` and the posterior: the
  variance-components test of the per-run differences (:func:`benchmark.analysis.stats.variance_components_test`;
  ``vc-worst-share`` below 30 splits, ``vc-satterthwaite`` from 30) or, with one seed per split or fewer than 5
  seed degrees of freedom, ``corrected`` (the corrected resampled t-test on the split means, Nadeau & Bengio
  2003); ``test_note`` says why it fell back;
* ``se_mean`` — the standard error of the mean difference (``sqrt(V̂)`` of the VC test, or the corrected SE);
  ``p`` two-sided; ``ci_low, ci_high`` — the 95 % interval that inverts the test;
* ``p_holm`` — ``p`` Holm-adjusted over the within-dataset complete-case rows of the grid (per metric);
  ``significant`` — ``p_holm < 0.05``, the only significance mark of the tables and plots;
* ``rope, p_below, p_rope, p_above, verdict`` — the test's posterior probabilities that Δ < −rope,
  |Δ| ≤ rope, Δ > rope and the verdict at 0.95 (``a better``, ``b better``, ``equivalent``, ``undecided``);
* ``var_split, var_seed`` — split-to-split variance of the true per-split difference and the training noise
  of one run's difference (NaN with one seed per split); ``r`` — the factor by which the tests inflate the
  split variance for the training-set overlap: n_test / n_train (Nadeau & Bengio), or the grid's
  ``split_correlation`` when it sets one; ``mde80`` — the smallest true mean difference the test detects
  with 80 % power at α = .05 with this grid's J, S, r and variance components;
* ``t_corrected, p_corrected`` — the corrected resampled t-test on the split means, kept for comparison;
  ``p_naive`` and ``p_wilcoxon`` — DESCRIPTIVE ONLY, for comparison with published practice: both ignore that
  the splits' training sets overlap and are anti-conservative (``results/calibration``);
* ``descriptive`` and ``caveat`` — cross-dataset cells (one fixed test set in every split) and sensitivity rows,
  whose p-values, interval, verdict and MDE are descriptive only: kept out of the Holm family, never marked;
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
from benchmark.metrics import HIGHER_IS_BETTER
from benchmark.schema import test_metric

ALPHA = 0.05
PRIMARY = "complete-case"
WORST_RANK = "worst-rank"
BOOT_COLUMNS = ["boot_split", "boot_ci_low", "boot_ci_high"]
STATS_COLUMNS = [*CELL_COLUMNS, "head_a", "head_b", "metric", "analysis", "n_splits", "n_seeds", "n_train",
                 "n_test", "failures_a", "failures_b", "p_failures", "mean_a", "mean_b", "mean_delta", "median_delta",
                 "std_delta", "test", "test_note", "se_mean", "df", "t", "p", "ci_low", "ci_high", "p_holm",
                 "significant", "rope", "p_below", "p_rope", "p_above", "verdict", "var_split", "var_seed", "r",
                 "mde80", "t_corrected", "p_corrected", "p_naive", "p_wilcoxon", "descriptive", "caveat",
                 *BOOT_COLUMNS]
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


def paired_runs(scores: Scores, pair_key: str, head_a: str, head_b: str, metric: str) -> pd.DataFrame:
    """Per (split, seed) of a cell where both heads have a run: ``value_a, value_b, failed_a, failed_b``."""
    runs = scores.runs[scores.runs["pair_key"] == pair_key]
    wide = runs.pivot_table(index=["split", "seed"], columns="head", values=[test_metric(metric), "failed"],
                            aggfunc="first", dropna=False)
    if head_a not in runs["head"].values or head_b not in runs["head"].values:
        return pd.DataFrame(columns=["split", "seed", "value_a", "value_b", "failed_a", "failed_b"])
    out = pd.DataFrame({"value_a": wide[test_metric(metric), head_a], "value_b": wide[test_metric(metric), head_b],
                        "failed_a": wide["failed", head_a], "failed_b": wide["failed", head_b]})
    out = out.dropna(subset=["failed_a", "failed_b"]).reset_index()
    return out.astype({"failed_a": bool, "failed_b": bool})


def _test_columns(deltas: pd.DataFrame, n_train: float, n_test: float, rope: float) -> dict:
    """The variance-components test of one comparison's per-run differences (or its fallback), as row fields."""
    result = stats.variance_components_test(deltas, n_train, n_test, rope, alpha=ALPHA)
    seeds = int(deltas.groupby("split").size().mode().iloc[0])
    mde = np.nan
    if result.test != stats.FALLBACK_TEST and result.var_split + result.var_seed > 0:
        components = stats.VarianceComponents(result.var_split, result.var_seed)
        mde = stats.vc_mde80(components, result.n_splits, seeds, result.r, ALPHA)
    elif result.test == stats.FALLBACK_TEST and result.se_mean > 0:
        sd = result.se_mean / np.sqrt(1 / result.n_splits + result.r)
        mde = stats.mde80(sd, result.n_splits, result.r, ALPHA)
    return {"n_seeds": seeds, "test": result.test, "test_note": result.note, "mean_delta": result.mean,
            "se_mean": result.se_mean, "df": result.df, "t": result.t, "p": result.p, "ci_low": result.ci_low,
            "ci_high": result.ci_high, "p_below": result.p_below, "p_rope": result.p_rope, "p_above": result.p_above,
            "verdict": result.verdict, "var_split": result.var_split, "var_seed": result.var_seed, "r": result.r,
            "mde80": mde}


def _worst_rank_row(row: dict, paired: pd.DataFrame, n_train: float, n_test: float, rope: float) -> dict | None:
    """The sensitivity row: the same test with every failed run scored as the cell's worst observed run."""
    try:
        filled_a, filled_b = stats.worst_rank_fill(paired["value_a"], paired["value_b"], paired["failed_a"],
                                                   paired["failed_b"], higher_is_better=HIGHER_IS_BETTER[row["metric"]])
        deltas = paired[["split"]].assign(delta=filled_a - filled_b)
        return {**row, **_test_columns(deltas, n_train, n_test, rope), "analysis": WORST_RANK,
                "n_splits": deltas["split"].nunique(), "mean_a": filled_a.mean(), "mean_b": filled_b.mean(),
                "descriptive": True, "caveat": "failed runs scored as the worst observed run (sensitivity only)"}
    except stats.StatsInputError:
        return None


def cell_stats(scores: Scores, pairs: pd.DataFrame, compare: Sequence[tuple[str, str]], sizes: pd.DataFrame,
               warnings: list[str], rope: float, split_correlation: float | None = None) -> pd.DataFrame:
    """One row per (cell, head pair, metric, analysis): the columns of ``stats.csv`` (module docstring) but
    the bootstrap's.

    ``sizes``: per pair_key, the mean ``n_train`` and ``n_test`` of its runs. ``split_correlation``: the ``r``
    of the tests (the grid key of that name); None: each cell's ``n_test / n_train``.
    """
    cells = scores.cells.set_index("pair_key")[CELL_COLUMNS[1:]].to_dict("index")
    rows = []
    for (pair_key, head_a, head_b, metric), group in pairs.groupby(["pair_key", "head_a", "head_b", "metric"],
                                                                    sort=False):
        d = group["delta"].to_numpy(dtype=float)
        n_train, n_test = sizes.loc[pair_key, "n_train"], sizes.loc[pair_key, "n_test"]
        tested = n_test if split_correlation is None else split_correlation * n_train  # the tests read r from it
        cell = cells[pair_key]
        caveat = stats.cross_dataset_caveat(cell["dataset"], cell["test_dataset"])
        paired = paired_runs(scores, pair_key, head_a, head_b, metric)
        failures = stats.paired_failure_test(paired["failed_a"], paired["failed_b"])
        complete = paired[~(paired["failed_a"] | paired["failed_b"])]
        row = {"pair_key": pair_key, **cell, "head_a": head_a, "head_b": head_b, "metric": metric,
               "analysis": PRIMARY, "n_splits": d.size, "n_seeds": 1, "n_train": n_train, "n_test": n_test,
               "failures_a": failures.failures_a, "failures_b": failures.failures_b, "p_failures": failures.p,
               "mean_a": group["value_a"].mean(), "mean_b": group["value_b"].mean(), "mean_delta": d.mean(),
               "median_delta": np.median(d), "std_delta": d.std(ddof=1) if d.size > 1 else np.nan,
               "rope": rope, "descriptive": caveat is not None, "caveat": caveat or "", "test": "", "test_note": "",
               "verdict": ""}
        row.update(dict.fromkeys(["se_mean", "df", "t", "p", "ci_low", "ci_high", "t_corrected", "p_corrected",
                                  "p_naive", "p_below", "p_rope", "p_above", "var_split", "var_seed", "r", "mde80"],
                                 np.nan))
        if d.size >= 2 and n_train > 0 and n_test > 0:
            deltas = complete[["split"]].assign(delta=complete["value_a"] - complete["value_b"])
            row.update(_test_columns(deltas, n_train, tested, rope))
            row["t_corrected"], row["p_corrected"] = stats.corrected_resampled_ttest(d, n_train, tested)
            row["p_naive"] = stats.naive_paired_ttest(d)[1]
        elif metric == "srcc":
            warn(warnings, f"{pair_key} {head_a} vs {head_b}: {d.size} complete split(s) or unknown "
                           "n_train/n_test params; no t-test")
        if caveat and metric == "srcc":
            warn(warnings, f"{pair_key}: {caveat}")
        row["p_wilcoxon"] = stats.wilcoxon_p(d)
        rows.append(row)
        if failures.failures_a + failures.failures_b and row["test"]:
            sensitivity = _worst_rank_row(row, paired, n_train, tested, rope)
            if sensitivity is not None:
                rows.append(sensitivity)
    out = pd.DataFrame(rows, columns=STATS_COLUMNS[:-len(BOOT_COLUMNS)])
    if out.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    family = out["p"].where(~out["descriptive"].astype(bool))
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


def primary_rows(stats_df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``stats.csv`` that carry the grid's answer (complete-case), without the sensitivity rows."""
    return stats_df[stats_df["analysis"] == PRIMARY] if len(stats_df) else stats_df


def across_datasets(stats_df: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """Wilcoxon over datasets of the per-dataset mean deltas, per (backbone, regime, head pair, metric).

    Only within-dataset cells enter the test (one value per dataset and backbone); cross-dataset cells reuse
    training or test data of those, so they get rows of their own (``scope = cross-dataset``) with the mean
    and no p-value.
    """
    rows = []
    keys = ["backbone", "regime", "head_a", "head_b", "metric"]
    primary = primary_rows(stats_df).dropna(subset=["mean_delta"])
    for scope, part in (("within-dataset", primary[~primary["descriptive"].astype(bool)]),
                        ("cross-dataset", primary[primary["descriptive"].astype(bool)])):
        for key, group in part.groupby(keys, sort=False):
            deltas = group["mean_delta"].to_numpy()
            p, caveat = stats.across_dataset_wilcoxon(deltas) if scope == "within-dataset" else (
                np.nan, "cross-dataset cells share data with the within-dataset ones: descriptive only")
            rows.append({**dict(zip(keys, key, strict=True)), "scope": scope, "n_datasets": deltas.size,
                         "datasets": ";".join(group["dataset"] + "->" + group["test_dataset"]),
                         "mean_delta": deltas.mean(), "n_positive": int((deltas > 0).sum()), "p_wilcoxon": p,
                         "caveat": caveat or ""})
            if caveat and scope == "within-dataset":
                warn(warnings, f"across datasets: {caveat}")
    return pd.DataFrame(rows, columns=[*keys, "scope", "n_datasets", "datasets", "mean_delta", "n_positive",
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


__all__ = ["ALPHA", "BOOT_COLUMNS", "PAIR_COLUMNS", "PRIMARY", "STATS_COLUMNS", "WORST_RANK", "across_datasets",
           "add_bootstrap", "cell_stats", "paired_deltas", "paired_runs", "primary_rows", "rank_blocks", "run_deltas"]
