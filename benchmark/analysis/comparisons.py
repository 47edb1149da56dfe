"""Paired comparisons of heads: per-split differences and the statistics of ``stats.csv``.

For a cell (backbone, dataset, test dataset, regime) and a head pair (A, B) from the grid's ``compare``
list, the differences ``d_js = metric_A − metric_B`` of the runs where both heads succeeded (split j,
seed s) feed :mod:`benchmark.analysis.stats`; ``pairs.csv`` holds their seed averages per split.

``stats.csv`` has rows per (cell, head pair, metric, analysis, target):

* ``pair_key, backbone, dataset, test_dataset, regime`` — the cell; ``head_a, head_b, metric``;
* ``analysis`` — ``complete-case`` (the answer: the runs where both heads succeeded) or ``worst-rank``
  (sensitivity, only for pairs with failures, dataset target only: every failed run scored as the cell's
  worst successful run; descriptive);
* ``target`` — what the test speaks for (:mod:`benchmark.analysis.stats.targets`): ``dataset`` (primary)
  "the mean difference over random splits of this dataset", tested by the paired t-test on the split
  means (``test = paired-t``, exact, no assumption on the splits' overlap); ``population`` the
  extrapolation to other data of the kind, tested by the variance-components test under an ASSUMED split
  correlation ``r`` (``vc-worst-share`` below 30 splits, ``vc-satterthwaite`` from 30, or ``corrected``, the
  corrected resampled t-test, with one seed per split or fewer than 5 seed degrees of freedom;
  ``test_note`` says why);
* ``n_splits`` — splits J where both heads have a successful run; ``n_seeds`` — seeds per split (most
  common); ``n_train, n_test`` — set sizes of a split; ``failures_a, failures_b`` — runs of each head that
  failed (left out of the differences); ``p_failures`` — exact sign test over splits of the two heads'
  failure counts (McNemar's test with one seed per split);
* ``mean_a, mean_b`` — mean over splits of each head's metric; ``mean_delta, median_delta, std_delta`` —
  of the per-split (seed-averaged) differences;
* ``se_mean, df, t, p`` — the target's test (two-sided); ``ci_low, ci_high`` — its 95 % interval;
* ``p_holm`` — ``p`` Holm-adjusted over the within-dataset complete-case rows of the grid, per target and
  metric (the family: every compared pair of every cell); ``significant`` — ``p_holm < 0.05``; the tables'
  only significance mark comes from the dataset rows;
* ``rope, p_below, p_rope, p_above, verdict`` — the test's posterior probabilities that Δ < −rope,
  |Δ| ≤ rope, Δ > rope and the verdict at 0.95 (``a better``, ``b better``, ``equivalent``, ``undecided``),
  per comparison, not adjusted for multiplicity;
* ``var_split, var_seed`` — split-to-split variance of the true per-split difference and the training noise
  of one run's difference (NaN with one seed per split);
* ``r`` — the split correlation the row's test assumes: 0 for the dataset target, n_test / n_train
  (Nadeau & Bengio) or the grid's ``split_correlation`` for the population target;
  ``r_star_significance, r_star_verdict`` — population SRCC rows: the largest r at which a significant
  difference stays significant (NaN when it is not significant at ``r``), and at which the verdict still
  reads as at ``r`` (``inf``: it never flips);
* ``mde80`` — the smallest true mean difference the row's test detects with 80 % power at α = .05 with
  this grid's J, S (and r), a plug-in from the observed spread; ``mde80_low, mde80_high`` — dataset rows:
  its 90 % sampling range;
* ``t_corrected, p_corrected`` — population rows: the corrected resampled t-test on the split means, for
  comparison; ``p_wilcoxon`` — dataset rows: the Wilcoxon signed-rank test of the split means (a
  distribution-free check of the same target, if they are symmetric);
* ``descriptive`` and ``caveat`` — cross-dataset cells (one fixed test set in every split) and sensitivity rows,
  whose p-values, interval, verdict and MDE are descriptive only: kept out of the Holm family, never marked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmark.analysis import stats
from benchmark.analysis.report_data import ASSUMED_R, CELL_COLUMNS, Scores, warn
from benchmark.metrics import HIGHER_IS_BETTER
from benchmark.schema import COLUMNS, GridRecord, test_metric

ALPHA = 0.05
PRIMARY = "complete-case"
WORST_RANK = "worst-rank"
BREAK_EVEN_METRICS = ("srcc",)
"""Metrics whose population rows get the break-even r* (a search over r: the headline metric only)."""
STATS_COLUMNS = [*CELL_COLUMNS, "head_a", "head_b", "metric", "analysis", "target", "n_splits", "n_seeds", COLUMNS.n_train,
                 COLUMNS.n_test, "failures_a", "failures_b", "p_failures", "mean_a", "mean_b", "mean_delta", "median_delta",
                 "std_delta", "test", "test_note", "se_mean", "df", "t", "p", "ci_low", "ci_high", "p_holm",
                 "significant", "rope", "p_below", "p_rope", "p_above", "verdict", "var_split", "var_seed", "r",
                 "r_star_significance", "r_star_verdict", "mde80", "mde80_low", "mde80_high", "t_corrected",
                 "p_corrected", "p_wilcoxon", "descriptive", "caveat"]
PAIR_COLUMNS = [*CELL_COLUMNS, COLUMNS.split, "head_a", "head_b", "metric", "n_seeds", "value_a", "value_b", "delta"]
_TEST_FIELDS = ["se_mean", "df", "t", "p", "ci_low", "ci_high", "p_below", "p_rope", "p_above", "var_split", "var_seed",
                "r", "r_star_significance", "r_star_verdict", "mde80", "mde80_low", "mde80_high", "t_corrected",
                "p_corrected", "p_wilcoxon"]


def run_deltas(scores: Scores, head_a: str, head_b: str, metric: str) -> pd.DataFrame:
    """Per (pair_key, split, seed) where both heads succeeded: both values and the difference A − B."""
    wide = scores.wide(metric, per_seed=True)
    if head_a not in wide or head_b not in wide:
        return pd.DataFrame(columns=[COLUMNS.pair_key, COLUMNS.split, COLUMNS.seed, "value_a", "value_b", "delta"])
    both = wide[[head_a, head_b]].dropna().set_axis(["value_a", "value_b"], axis=1).reset_index()
    return both.assign(delta=both["value_a"] - both["value_b"])


def paired_deltas(scores: Scores, pairs: Sequence[tuple[str, str]], metrics: Sequence[str]) -> pd.DataFrame:
    """Per-split paired values (``pairs.csv``): the seeds where both heads succeeded, averaged within the split."""
    frames = []
    for metric in metrics:
        for head_a, head_b in pairs:
            runs = run_deltas(scores, head_a, head_b, metric)
            per_split = runs.groupby([COLUMNS.pair_key, COLUMNS.split]).agg(
                n_seeds=("delta", "size"), value_a=("value_a", "mean"), value_b=("value_b", "mean")).reset_index()
            frames.append(per_split.assign(head_a=head_a, head_b=head_b, metric=metric,
                                           delta=per_split["value_a"] - per_split["value_b"]))
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    return pd.concat(frames, ignore_index=True).merge(scores.cells, on=COLUMNS.pair_key)[PAIR_COLUMNS]


def paired_runs(scores: Scores, pair_key: str, head_a: str, head_b: str, metric: str) -> pd.DataFrame:
    """Per (split, seed) of a cell where both heads have a run: ``value_a, value_b, failed_a, failed_b``."""
    runs = scores.runs[scores.runs[COLUMNS.pair_key] == pair_key]
    wide = runs.pivot_table(index=[COLUMNS.split, COLUMNS.seed], columns=COLUMNS.head,
                            values=[test_metric(metric), "failed"],
                            aggfunc="first", dropna=False)
    if head_a not in runs[COLUMNS.head].values or head_b not in runs[COLUMNS.head].values:
        return pd.DataFrame(columns=[COLUMNS.split, COLUMNS.seed, "value_a", "value_b", "failed_a", "failed_b"])
    out = pd.DataFrame({"value_a": wide[test_metric(metric), head_a], "value_b": wide[test_metric(metric), head_b],
                        "failed_a": wide["failed", head_a], "failed_b": wide["failed", head_b]})
    out = out.dropna(subset=["failed_a", "failed_b"]).reset_index()
    return out.astype({"failed_a": bool, "failed_b": bool})


def _seeds(deltas: pd.DataFrame) -> int:
    """Seeds per split (the most common count)."""
    return int(deltas.groupby(COLUMNS.split).size().mode().iloc[0])


def dataset_columns(deltas: pd.DataFrame, rope: float) -> dict:
    """The dataset target's test (:func:`benchmark.analysis.stats.dataset_target_test`) of one comparison's
    per-run differences (``split, delta``; seeds averaged within each split), as row fields."""
    means = deltas.groupby(COLUMNS.split, sort=False)["delta"].mean()
    res = stats.dataset_target_test(means.to_numpy(), rope, alpha=ALPHA)
    mde, mde_low, mde_high = stats.dataset_mde80(res.sd, res.n_splits, ALPHA)
    components = stats.split_seed_variance(deltas)
    return {"target": stats.DATASET, "n_seeds": _seeds(deltas), "test": stats.DATASET_TEST, "test_note": "",
            "mean_delta": res.mean, "se_mean": res.se_mean, "df": res.df, "t": res.t, "p": res.p, "ci_low": res.ci_low,
            "ci_high": res.ci_high, "p_below": res.p_below, "p_rope": res.p_rope, "p_above": res.p_above,
            "verdict": res.verdict, "var_split": components.var_split, "var_seed": components.var_seed, "r": 0.0,
            "mde80": mde, "mde80_low": mde_low, "mde80_high": mde_high, "p_wilcoxon": res.p_wilcoxon}


def population_columns(deltas: pd.DataFrame, r: float, rope: float, break_even: bool) -> dict:
    """The population target's test of one comparison: the variance-components test with its assumed split
    correlation ``r`` (or the corrected test with one seed per split), its MDE80 and, when ``break_even``, the
    r* at which its significance and its verdict flip."""
    result = stats.variance_components_test(deltas, r, rope, alpha=ALPHA)
    seeds = _seeds(deltas)
    mde = np.nan
    if result.test != stats.FALLBACK_TEST and result.var_split + result.var_seed > 0:
        components = stats.VarianceComponents(result.var_split, result.var_seed)
        mde = stats.vc_mde80(components, result.n_splits, seeds, result.r, ALPHA)
    elif result.test == stats.FALLBACK_TEST and result.se_mean > 0:
        sd = result.se_mean / np.sqrt(1 / result.n_splits + result.r)
        mde = stats.mde80(sd, result.n_splits, result.r, ALPHA)
    means = deltas.groupby(COLUMNS.split, sort=False)["delta"].mean().to_numpy()
    t_corrected, p_corrected = stats.corrected_ttest(means, r)
    r_stars = stats.population_break_even(deltas, r, rope, ALPHA) if break_even else (np.nan, np.nan)
    return {"target": stats.POPULATION, "n_seeds": seeds, "test": result.test, "test_note": result.note,
            "mean_delta": result.mean, "se_mean": result.se_mean, "df": result.df, "t": result.t, "p": result.p,
            "ci_low": result.ci_low, "ci_high": result.ci_high, "p_below": result.p_below, "p_rope": result.p_rope,
            "p_above": result.p_above, "verdict": result.verdict, "var_split": result.var_split,
            "var_seed": result.var_seed, "r": result.r, "r_star_significance": r_stars[0], "r_star_verdict": r_stars[1],
            "mde80": mde, "t_corrected": t_corrected, "p_corrected": p_corrected}


def _worst_rank_row(row: dict, paired: pd.DataFrame, rope: float) -> dict | None:
    """The sensitivity row (dataset target): every failed run scored as the cell's worst observed run."""
    try:
        filled_a, filled_b = stats.worst_rank_fill(paired["value_a"], paired["value_b"], paired["failed_a"],
                                                   paired["failed_b"], higher_is_better=HIGHER_IS_BETTER[row["metric"]])
        deltas = paired[[COLUMNS.split]].assign(delta=filled_a - filled_b)
        means = deltas.groupby(COLUMNS.split)["delta"].mean()
        return {**row, **dataset_columns(deltas, rope), "analysis": WORST_RANK, "n_splits": len(means),
                "mean_a": filled_a.mean(), "mean_b": filled_b.mean(), "median_delta": means.median(),
                "std_delta": means.std(ddof=1), "descriptive": True,
                "caveat": "failed runs scored as the worst observed run (sensitivity only)"}
    except stats.StatsInputError:
        return None


def cell_stats(scores: Scores, pairs: pd.DataFrame, sizes: pd.DataFrame, warnings: list[str],
               grid: GridRecord) -> pd.DataFrame:
    """Rows per (cell, head pair, metric, analysis, target): the columns of ``stats.csv`` (module docstring).

    ``sizes``: per pair_key, the mean ``n_train`` and ``n_test`` of its runs and the ``r`` its population target
    assumes (:func:`~benchmark.analysis.report_data.cell_sizes`). ``grid`` gives the ROPE.
    """
    rope = grid.rope
    cells = scores.cells.set_index(COLUMNS.pair_key)[CELL_COLUMNS[1:]].to_dict("index")
    rows = []
    for (pair_key, head_a, head_b, metric), group in pairs.groupby([COLUMNS.pair_key, "head_a", "head_b", "metric"],
                                                                    sort=False):
        d = group["delta"].to_numpy(dtype=float)
        n_train, n_test, assumed_r = sizes.loc[pair_key, [COLUMNS.n_train, COLUMNS.n_test, ASSUMED_R]]
        cell = cells[pair_key]
        caveat = stats.cross_dataset_caveat(cell[COLUMNS.dataset], cell[COLUMNS.test_dataset])
        paired = paired_runs(scores, pair_key, head_a, head_b, metric)
        failures = stats.paired_failure_test(paired["failed_a"], paired["failed_b"], paired[COLUMNS.split])
        complete = paired[~(paired["failed_a"] | paired["failed_b"])]
        row = {COLUMNS.pair_key: pair_key, **cell, "head_a": head_a, "head_b": head_b, "metric": metric,
               "analysis": PRIMARY, "n_splits": d.size, "n_seeds": 1, COLUMNS.n_train: n_train, COLUMNS.n_test: n_test,
               "failures_a": failures.failures_a, "failures_b": failures.failures_b, "p_failures": failures.p,
               "mean_a": group["value_a"].mean(), "mean_b": group["value_b"].mean(), "mean_delta": d.mean(),
               "median_delta": np.median(d), "std_delta": d.std(ddof=1) if d.size > 1 else np.nan,
               "rope": rope, "descriptive": caveat is not None, "caveat": caveat or "", "test": "", "test_note": "",
               "verdict": "", **dict.fromkeys(_TEST_FIELDS, np.nan)}
        if d.size < 2:
            if metric == "srcc":
                warn(warnings, f"{pair_key} {head_a} vs {head_b}: {d.size} complete split(s); no test")
            rows.append({**row, "target": stats.DATASET})
        else:
            deltas = complete[[COLUMNS.split]].assign(delta=complete["value_a"] - complete["value_b"])
            dataset = {**row, **dataset_columns(deltas, rope)}
            rows.append(dataset)
            if failures.failures_a + failures.failures_b:
                sensitivity = _worst_rank_row(dataset, paired, rope)
                rows += [sensitivity] if sensitivity is not None else []
            if n_train > 0 and n_test > 0:  # the population target needs the split sizes for its assumed r
                rows.append({**row, **population_columns(deltas, assumed_r, rope,
                                                         metric in BREAK_EVEN_METRICS and caveat is None)})
            elif metric == "srcc":
                warn(warnings, f"{pair_key} {head_a} vs {head_b}: unknown n_train/n_test params; no population test")
        if caveat and metric == "srcc":
            warn(warnings, f"{pair_key}: {caveat}")
    out = pd.DataFrame(rows, columns=STATS_COLUMNS)
    if out.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    family = out["p"].where(~out["descriptive"].astype(bool))  # Holm: per target and metric, answer rows only
    out["p_holm"] = family.groupby([out["target"], out["metric"]]).transform(lambda p: stats.holm(p.to_numpy()))
    out["significant"] = out["p_holm"] < ALPHA
    return out


def primary_rows(stats_df: pd.DataFrame, target: str = stats.DATASET) -> pd.DataFrame:
    """The rows of ``stats.csv`` that carry the grid's answer for a target (complete-case; the dataset target
    by default), without the sensitivity rows."""
    if not len(stats_df):
        return stats_df
    return stats_df[(stats_df["analysis"] == PRIMARY) & (stats_df["target"] == target)]


def across_datasets(stats_df: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """Wilcoxon over datasets of the per-dataset mean deltas, per (backbone, regime, head pair, metric).

    Only within-dataset cells enter the test (one value per dataset and backbone); cross-dataset cells reuse
    training or test data of those, so they get rows of their own (``scope = cross-dataset``) with the mean
    and no p-value.
    """
    rows = []
    keys = [COLUMNS.backbone, COLUMNS.regime, "head_a", "head_b", "metric"]
    primary = primary_rows(stats_df).dropna(subset=["mean_delta"])
    for scope, part in (("within-dataset", primary[~primary["descriptive"].astype(bool)]),
                        ("cross-dataset", primary[primary["descriptive"].astype(bool)])):
        for key, group in part.groupby(keys, sort=False):
            deltas = group["mean_delta"].to_numpy()
            p, caveat = stats.across_dataset_wilcoxon(deltas) if scope == "within-dataset" else (
                np.nan, "cross-dataset cells share data with the within-dataset ones: descriptive only")
            rows.append({**dict(zip(keys, key, strict=True)), "scope": scope, "n_datasets": deltas.size,
                         "datasets": ";".join(group[COLUMNS.dataset] + "->" + group[COLUMNS.test_dataset]),
                         "mean_delta": deltas.mean(), "n_positive": int((deltas > 0).sum()), "p_wilcoxon": p,
                         "caveat": caveat or ""})
            if caveat and scope == "within-dataset":
                warn(warnings, f"across datasets: {caveat}")
    return pd.DataFrame(rows, columns=[*keys, "scope", "n_datasets", "datasets", "mean_delta", "n_positive",
                                       "p_wilcoxon", "caveat"])


def rank_blocks(scores: Scores, warnings: list[str]) -> pd.DataFrame | None:
    """Test SRCC per independent block and head, for the Friedman test and the critical-difference diagram;
    None, with a warning saying why, when there are too few blocks or heads for the test to mean anything.

    A block is a dataset (its within-dataset cells only), splits averaged and, where a grid has several
    backbones or regimes, those averaged too (``skipna=False``: a head missing on one backbone leaves the
    block incomplete): two backbones on one dataset share its images, and a cross-dataset cell X→Y shares
    X's and Y's, so neither is an independent block.
    """
    keys = [COLUMNS.dataset, COLUMNS.test_dataset, COLUMNS.split, COLUMNS.head]
    within = scores.per_split[scores.per_split[COLUMNS.dataset] == scores.per_split[COLUMNS.test_dataset]]
    table = within.groupby(keys, sort=False)[COLUMNS.test_srcc].agg(lambda v: v.mean(skipna=False)).reset_index()
    blocks, note = stats.independent_blocks(table, COLUMNS.test_srcc, block=(COLUMNS.dataset, COLUMNS.test_dataset),
                                            seed=None)
    if note:
        warn(warnings, f"critical-difference diagram: {note}" + (" (it is not drawn: splits share their training "
                                                                 "data, so they are not independent blocks)"
                                                                 if blocks is None else ""))
    return blocks


__all__ = ["ALPHA", "BREAK_EVEN_METRICS", "PAIR_COLUMNS", "PRIMARY", "STATS_COLUMNS", "WORST_RANK", "across_datasets",
           "cell_stats", "dataset_columns", "paired_deltas", "paired_runs", "population_columns", "primary_rows", "rank_blocks",
           "run_deltas"]
