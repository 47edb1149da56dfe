"""Study ``shares``: the df rules of the VC t over every split share.

On the exact normal model (r = :data:`SHARE_RATIO`), over every split share ``λ = σ²_a / (σ²_a + σ²_e / S)``:
type-I errors of the t rules computed exactly (``rejection_rate``), the Bayes-VC rule's simulated. This is
the evidence for the rule ``vc_ttest`` uses (worst share for J < 30, Satterthwaite for J >= 30). The rates:
``shares.md``, ``shares.csv`` and ``shares.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from tqdm import tqdm

from benchmark.analysis.stats import (
    SATTERTHWAITE_MIN_SPLITS,
    SplitSeedMoments,
    rejection_rate,
    vc_posterior,
    worst_share_critical,
)

from .common import TEST_COLOURS, rate

SHARE_SPLITS = (10, 20, 30, 50, 100)
SHARE_SEEDS = (2, 3, 5)
SHARE_VALUES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SHARE_RATIO = 0.32
SHARE_TESTS = {
    "vc_t": "VC t, suite rule (worst share J < 30, Satterthwaite J >= 30)",
    "satterthwaite": "VC t, Satterthwaite at every J",
    "df_j_minus_1": "VC t, df = J - 1",
    "corrected_t": "corrected t (split means)",
    "bayes_vc": "Bayes-VC significance (simulated)",
}


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """Type-I error of the VC df rules over every split share, on the exact normal model.

    The null distribution of the VC t depends on the share ``λ = σ²_a / (σ²_a + h σ²_e)`` alone (for given
    J, S, r). The t rules' type-I errors are computed exactly (``rejection_rate``; the corrected test's in
    closed form); the Bayes-VC rule's by simulating the sufficient statistics ``(d̄, s²_m, MSW)``.
    """
    r, alpha = SHARE_RATIO, args.alpha
    rows = []
    for j in SHARE_SPLITS:
        for s in SHARE_SEEDS:
            nu, h = j * (s - 1), 1.0 / s
            worst = worst_share_critical(j, nu, h, r, alpha) if j < SATTERTHWAITE_MIN_SPLITS else None
            rules = {
                "satterthwaite": lambda df: stats.t.ppf(1 - alpha / 2, df),
                "df_j_minus_1": lambda df, j=j: np.full_like(df, stats.t.ppf(1 - alpha / 2, j - 1)),
            }
            rules["vc_t"] = rules["satterthwaite"] if worst is None else (lambda df, c=worst: np.full_like(df, c))
            for share in tqdm(SHARE_VALUES, desc=f"shares J={j} S={s}", leave=False):
                var_split, var_seed = share, (1.0 - share) / h
                v = var_split * (1 / j + r) + h * var_seed / j
                base = {"n_splits": j, "n_seeds": s, "share": share}
                for test, critical in rules.items():
                    size = rejection_rate(0.0, var_split, var_seed, j, nu, h, r, critical)
                    rows.append({**base, "test": test, "rate": size, "ci95_low": size, "ci95_high": size})
                # Corrected test on split means: t = Z sqrt(V / ((1/J + r) σ²_m)) / sqrt(χ²/k), σ²_m = 1.
                size = 2 * stats.t.sf(stats.t.ppf(1 - alpha / 2, j - 1) * np.sqrt((1 / j + r) / v), j - 1)
                rows.append({**base, "test": "corrected_t", "rate": size, "ci95_low": size, "ci95_high": size})
                n = args.n_share_grids
                m = SplitSeedMoments(mean=np.sqrt(v) * rng.standard_normal(n),
                                     var_means=rng.chisquare(j - 1, n) / (j - 1),
                                     msw=var_seed * rng.chisquare(nu, n) / nu, n_splits=j, seed_df=nu, h=h)
                rows.append({**base, "test": "bayes_vc", **rate(vc_posterior(m, r).two_sided() < alpha)})
    table = pd.DataFrame(rows)
    tables["shares"] = table
    worst_rows = table.loc[table.groupby(["n_splits", "n_seeds", "test"])["rate"].idxmax()]
    return {"settings": {"test_train_ratio": r, "shares": list(SHARE_VALUES), "n_bayes_grids": args.n_share_grids},
            "max_over_shares": worst_rows[["n_splits", "n_seeds", "test", "rate", "share"]].to_dict("records")}


def plot(table: pd.DataFrame, alpha: float, path: Path) -> None:
    """Type-I error over the split share, one panel per J; S = 2 solid, S = 5 dashed."""
    fig = Figure(figsize=(4 * len(SHARE_SPLITS), 4.2), layout="constrained")
    axes = fig.subplots(1, len(SHARE_SPLITS), sharey=True)
    for ax, j in zip(axes, SHARE_SPLITS, strict=True):
        for test, label in SHARE_TESTS.items():
            for s, style in ((2, "-"), (5, "--")):
                part = table[(table["n_splits"] == j) & (table["n_seeds"] == s) & (table["test"] == test)]
                ax.plot(part["share"], part["rate"], style, color=TEST_COLOURS[test],
                        label=label if s == 2 else None)
        ax.axhline(alpha, color="black", linewidth=1)
        ax.axhspan(alpha, 0.06, color="grey", alpha=0.15, linewidth=0)
        ax.set_title(f"J = {j} splits", fontsize=10)
        ax.set_xlabel("split share λ = σ²_a / (σ²_a + σ²_e / S)")
        ax.set_ylim(0, 0.16)
    axes[0].set_ylabel(f"type-I error at α = {alpha:g}")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(SHARE_TESTS), fontsize=9,
               title="S = 2 solid, S = 5 dashed; grey band: α to 0.06", title_fontsize=9)
    fig.suptitle(f"VC df rules over the unknown split share (normal model, r = {SHARE_RATIO})")
    fig.savefig(path, dpi=150)


def markdown(table: pd.DataFrame) -> str:
    """Largest type-I error over the split shares, and the share where it occurs, per J, S and rule."""
    lines = [f"Largest type-I error over split shares λ in {list(SHARE_VALUES)} (normal model, r = {SHARE_RATIO}, "
             "α = 0.05; exact for the t rules, simulated for Bayes-VC). Cells: max (at λ).", "",
             "| J | S | " + " | ".join(SHARE_TESTS.values()) + " |", "|---|---|" + "---|" * len(SHARE_TESTS)]
    for (j, s), part in table.groupby(["n_splits", "n_seeds"]):
        cells = []
        for test in SHARE_TESTS:
            rows = part[part["test"] == test]
            worst = rows.loc[rows["rate"].idxmax()]
            mark = "**" if worst["rate"] > 0.06 else ""
            cells.append(f"{mark}{worst['rate']:.3f}{mark} ({worst['share']:g})")
        lines.append(f"| {j} | {s} | " + " | ".join(cells) + " |")
    lines += ["", "Above 0.06 in bold."]
    return "\n".join(lines) + "\n"
