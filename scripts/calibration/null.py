"""Study ``null``: type-I error of one cell's per-split tests when two heads are equally good.

Two heads of exactly equal expected quality (:mod:`.ridge`), 500 independent rows, 80/20 splits: the
corrected resampled t-test vs the naive t-test and the per-split Wilcoxon test. The rates:
``summary.json`` (``null``) and ``type1_error.png``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark.analysis.stats import corrected_resampled_ttest, naive_paired_ttest, wilcoxon_p

from .common import rate
from .ridge import GridModel, simulate

NULL_TESTS = {
    "corrected_t": "corrected resampled t-test",
    "naive_t": "naive paired t-test",
    "wilcoxon": "Wilcoxon signed-rank",
}
"""The tests of the null study, by column suffix."""


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """Type-I error of the corrected, naive and Wilcoxon tests on null cells with independent rows."""
    model = GridModel(n_refs=args.n_samples, n_splits=args.n_splits,
                      fractions=(1.0 - args.test_fraction, 0.0, args.test_fraction))
    srcc = simulate(model, args.n_sims, rng, "null")
    rows = []
    for d in srcc[..., 0] - srcc[..., 1]:
        t_c, p_c = corrected_resampled_ttest(d, model.n_train, model.n_test)
        t_n, p_n = naive_paired_ttest(d)
        rows.append({"mean_delta": float(d.mean()), "sd_delta": float(d.std(ddof=1)), "t_corrected_t": t_c,
                     "p_corrected_t": p_c, "t_naive_t": t_n, "p_naive_t": p_n, "p_wilcoxon": wilcoxon_p(d)})
    table = pd.DataFrame(rows)
    table.insert(0, "sim", np.arange(args.n_sims))
    table["srcc_a"], table["srcc_b"] = srcc[..., 0].mean(axis=1), srcc[..., 1].mean(axis=1)
    tables["null"] = table
    tests = {key: {"label": label, **rate(table[f"p_{key}"] < args.alpha)} for key, label in NULL_TESTS.items()}
    # Var(mean d) / E[s^2] is what a t-test's variance factor must match:
    # 1/J for the naive test, 1/J + n_test/n_train for the corrected one.
    j = model.n_splits
    diagnostics = {
        "variance_ratio_empirical": float(table["mean_delta"].var(ddof=1) / (table["sd_delta"] ** 2).mean()),
        "variance_ratio_naive": 1.0 / j,
        "variance_ratio_corrected": 1.0 / j + model.n_test / model.n_train,
        "mean_srcc_a": float(table["srcc_a"].mean()),
        "mean_srcc_b": float(table["srcc_b"].mean()),
        "mean_delta": float(table["mean_delta"].mean()),
        "mean_sd_delta": float(table["sd_delta"].mean()),
    }
    settings = {**asdict(model), "n_train": model.n_train, "n_test": model.n_test, "n_sims": args.n_sims}
    return {"tests": tests, "diagnostics": diagnostics, "settings": settings}


def plot(null: dict, alpha: float, path: Path) -> None:
    """Bar chart of each test's type-I error with its 95 % CI and the nominal alpha line."""
    tests = null["tests"]
    labels = [tests[k]["label"] for k in NULL_TESTS]
    rates = np.array([tests[k]["rate"] for k in NULL_TESTS])
    err = np.array([[tests[k]["rate"] - tests[k]["ci95_low"] for k in NULL_TESTS],
                    [tests[k]["ci95_high"] - tests[k]["rate"] for k in NULL_TESTS]])
    # A bare Figure (no pyplot) renders through the Agg canvas: no GUI backend, no global state.
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(labels, rates, yerr=err, capsize=6, color=["#4C72B0", "#DD8452", "#55A868"])
    ax.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"nominal α = {alpha:g}")
    ax.set_ylabel(f"type-I error ({tests['corrected_t']['n']} null cells, 95 % Wilson CI)")
    ax.set_title("Calibration of per-cell tests under the null")
    ax.legend()
    fig.savefig(path, dpi=150)
