"""Study ``effects``: verdict rates, type-I error, power and MDE of one cell's tests at known true differences.

Independent rows, 60/20/20 splits, true SRCC differences 0, ROPE/2, 2 ROPE and 3 ROPE
(:data:`EFFECTS_IN_ROPES`): (i) with no difference, the rates of "a better"/"b better" verdicts of the
correlated Bayesian t-test and the corrected test's type-I error; (ii) inside the ROPE, the rate of
"equivalent"; (iii) at 2-3 ROPEs, the power of the corrected test and the verdict rates — for a suite-like
setting (500 rows, heads that differ a lot) and a large one (2000 rows, similar heads) where equivalence can
be shown. The ridge model and its true differences: :mod:`.ridge`. The rates: ``summary.json`` (``effects``)
and ``verdicts.png``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from benchmark.analysis.stats import VERDICTS, bayesian_correlated_ttest, corrected_resampled_ttest, mde80, verdict

from .common import rate
from .ridge import GridModel, TrueDifference, simulate

EFFECTS_IN_ROPES = (0.0, 0.5, 2.0, 3.0)
"""True SRCC differences of the effect studies, in ROPE units."""


def effect_rows(deltas: np.ndarray, model: GridModel, alpha: float, rope: float) -> pd.DataFrame:
    """Corrected test, Bayesian probabilities, verdict and MDE of each simulated cell (a row of ``deltas``)."""
    mde_per_sd = mde80(1.0, model.n_splits, model.n_test / model.n_train, alpha)  # the MDE is linear in the SD
    rows = []
    for d in deltas:
        p_below, p_rope, p_above = bayesian_correlated_ttest(d, model.n_train, model.n_test, rope)
        sd = float(d.std(ddof=1))
        rows.append({
            "mean_delta": float(d.mean()), "sd_delta": sd,
            "p_corrected": corrected_resampled_ttest(d, model.n_train, model.n_test)[1],
            "p_below": p_below, "p_rope": p_rope, "p_above": p_above,
            "verdict": verdict(p_below, p_rope, p_above),
            "mde80": mde_per_sd * sd,
        })
    return pd.DataFrame(rows)


def summarise_effect(table: pd.DataFrame, target: float, truth_se: float, var_a: float, alpha: float) -> dict:
    rejected = table["p_corrected"] < alpha
    return {
        "true_delta": target,
        "true_delta_mc_se": truth_se,
        "private_variance_a": var_a,
        "realised_mean_delta": float(table["mean_delta"].mean()),
        "mean_sd_delta": float(table["sd_delta"].mean()),
        # Var(mean d) / E[var(d)]: the variance factor the corrected test assumes is 1/J + n_test/n_train.
        "variance_ratio_empirical": float(table["mean_delta"].var(ddof=1) / (table["sd_delta"] ** 2).mean()),
        "mean_mde80": float(table["mde80"].mean()),
        ("corrected_t_type1" if target == 0.0 else "corrected_t_power"): rate(rejected),
        "verdicts": {v: rate(table["verdict"] == v) for v in VERDICTS},
    }


def effect_study(model: GridModel, n_sims: int, alpha: float, rope: float, rng: np.random.Generator,
                 name: str, tables: dict[str, pd.DataFrame]) -> dict:
    """Rates of one setting at every effect of ``EFFECTS_IN_ROPES`` (true differences solved first)."""
    truth = TrueDifference(model, rng)
    results = []
    for k in EFFECTS_IN_ROPES:
        target = k * rope
        var_a = truth.solve(target)
        m = replace(model, private_variances=(var_a, model.private_variances[1]))
        srcc = simulate(m, n_sims, rng, f"{name} Δ={target:g}")
        table = effect_rows(srcc[..., 0] - srcc[..., 1], m, alpha, rope)
        tables[f"{name}_delta{target:g}"] = table
        results.append(summarise_effect(table, target, truth.standard_error(var_a), var_a, alpha))
    settings = {**asdict(model), "n_train": model.n_train, "n_test": model.n_test, "n_sims": n_sims,
                "variance_ratio_corrected": 1.0 / model.n_splits + model.n_test / model.n_train}
    return {"settings": settings, "effects": results}


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """(i)-(iii) on independent rows: a suite-like setting and a large one with similar heads."""
    settings = {
        "suite_like_500_rows": GridModel(n_refs=500, private_variances=(0.1, 0.1)),
        "large_2000_rows_similar_heads": GridModel(n_refs=2000, private_variances=(0.005, 0.005)),
    }
    return {name: effect_study(model, args.n_effect_sims, args.alpha, args.rope, rng, name, tables)
            for name, model in settings.items()}


def plot_verdicts(studies: dict[str, dict], path: Path) -> None:
    """Stacked verdict rates per setting and true difference."""
    colors = {"a better": "#55A868", "b better": "#C44E52", "equivalent": "#4C72B0", "undecided": "#BBBBBB"}
    settings = list(studies)
    fig = Figure(figsize=(4 * len(settings), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(settings), sharey=True))
    for ax, name in zip(axes, settings, strict=True):
        effects = studies[name]["effects"]
        labels = [f"{e['true_delta']:.3f}" for e in effects]
        bottom = np.zeros(len(effects))
        for v in VERDICTS:
            heights = np.array([e["verdicts"][v]["rate"] for e in effects])
            ax.bar(labels, heights, bottom=bottom, color=colors[v], label=v)
            bottom += heights
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_xlabel("true ΔSRCC")
    axes[0].set_ylabel("share of simulated cells")
    axes[-1].legend(fontsize=8)
    fig.savefig(path, dpi=150)
