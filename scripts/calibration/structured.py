"""Study ``structured``: the per-split tests on the harness's real split structure, with seed noise.

A per-run difference is ``d_js = Δ + a_j + e_js``: ``a_j`` the split's own difference, ``e_js`` one run's
training noise. The split structure is ``bundled``'s 18 content groups at their real sizes, split by
``benchmark.data.splits.make_split`` (0.6/0.2/0.2) with fresh split seeds per grid. Every grid draws a
per-group test effect ``t_k`` and training effect ``g_k`` (i.i.d. normal, mean 0 over datasets, so Δ is the
expected difference over datasets — the population target — and the dataset's own mean is what correlates
its splits); ``a_j`` = mean of ``t`` over split j's test images + mean of ``g`` over its training images,
scaled so that its within-grid variance is the committed default grid's ``var_split`` of
:data:`COMPONENTS_ROW` (read from ``--components``, by default :data:`DEFAULT_COMPONENTS`), plus seed noise
``e ~ N(0, var_seed)`` from the same row. Four scenarios (:data:`SCENARIOS`): (i) no split effect, (ii) test
composition only, (iii) the training share that makes the between-split correlation
``n_test / (n_test + n_train)`` — what the population test assumes — and (iv) a 25 % training share. The
training share is an INPUT of each scenario, not a measurement: (iii) checks the test's algebra under its own
assumption, (iv) what a wrong assumption costs. For J in :data:`STRUCTURED_SPLITS` and S in
:data:`STRUCTURED_SEEDS`: type-I error and power at :data:`EFFECTS_IN_MDE` x the VC test's MDE80 at J = 10,
S = 2, of the naive paired t (the dataset test, here against the population truth), the corrected t (both on
split means), the VC t and the Bayes-VC significance rule (``variance_components_test``'s two decisions;
with one seed per split both fall back to the corrected test), and the Bayes verdict rates. The rates:
``structured.md``, ``structured.csv`` and ``structured.png``.

Why simulate: the harness null (:mod:`.harness`: one head against itself under another seed of the same
split) has no split x head term (``a_j = 0``), so its per-split differences are i.i.d. seed noise —
scenario (i) on the real training noise. It cannot show the calibration of any test when the split itself
changes the difference (scenarios ii-iv), in particular the training-set share under which every test that
assumes ``ρ = n_test / (n_test + n_train)`` is liberal, nor the power against a split-dependent difference.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from tqdm import tqdm

from benchmark.analysis.stats import (
    VERDICTS,
    VarianceComponents,
    balanced_moments,
    bayesian_correlated_ttest,
    corrected_resampled_ttest,
    design_table,
    uses_vc_test,
    vc_mde80,
    vc_posterior,
    vc_ttest,
    verdict,
)
from benchmark.data.bundled import DEFAULT_RECIPE
from benchmark.data.splits import make_split
from benchmark.schema import COLUMNS

from .common import TEST_COLOURS, rate

DEFAULT_COMPONENTS = Path(__file__).resolve().parents[2] / "results" / "default" / "stats.csv"
"""The committed default grid's statistics, whose :data:`COMPONENTS_ROW` the study simulates by default."""
COMPONENTS_ROW = {COLUMNS.backbone: "efficientnet_lite0", "head_a": "dor", "head_b": "mse", "metric": "srcc"}
"""The ``stats.csv`` row whose variance components the structured study simulates."""


def measured_components(stats_csv: Path) -> VarianceComponents:
    """Within-grid split variance of the true per-split difference and one run's training noise, in SRCC², of
    :data:`COMPONENTS_ROW` in a committed ``stats.csv``."""
    table = pd.read_csv(stats_csv)
    row = table[(table[list(COMPONENTS_ROW)] == pd.Series(COMPONENTS_ROW)).all(axis=1)
                & (table["analysis"] == "complete-case")].iloc[0]
    return VarianceComponents(float(row["var_split"]), float(row["var_seed"]))


STRUCTURED_SPLITS = (10, 20, 50)
STRUCTURED_SEEDS = (1, 2, 3, 5)
EFFECTS_IN_MDE = (0.0, 0.5, 1.0, 2.0)
"""True differences of the structured study, in units of the VC test's MDE80 at J = 10, S = 2."""
SCENARIOS = {
    "seed_only": "(i) no split effect, seed noise only",
    "test_composition": "(ii) split effect from test-set composition only",
    "nadeau_bengio": "(iii) Nadeau-Bengio correlation (test + the training share that gives it)",
    "train_share_25": "(iv) 25 % of the split effect from training-set composition",
}
VC_TESTS = {
    "naive_t": "naive paired t (split means)",
    "corrected_t": "corrected t (split means)",
    "vc_t": "VC t (suite rule, fallback at S = 1)",
    "bayes_vc": "Bayes-VC significance (fallback at S = 1)",
}


def bundled_labels() -> pd.DataFrame:
    """A label table with the ``ref`` groups of ``bundled`` at their real sizes (16 of 100 images, 2 of 50)."""
    per_crop = len(DEFAULT_RECIPE.distortions) * len(DEFAULT_RECIPE.levels)
    sizes = {scene: count * per_crop for scene, count in DEFAULT_RECIPE.crop_counts.items()}
    return pd.DataFrame({"ref": np.repeat(list(sizes), list(sizes.values()))})


@dataclass(frozen=True)
class SplitPool:
    """The harness's splits of ``bundled`` for split seeds 0 .. n - 1 (``make_split``, fractions 0.6/0.2/0.2).

    ``test_weights[i, k]`` is the share of split ``i``'s test images that belong to group ``k`` (0 if the
    group is not in the test set), so a per-group effect ``t`` gives the test-set mean ``test_weights @ t``;
    likewise ``train_weights``.
    """

    test_weights: np.ndarray
    train_weights: np.ndarray
    n_train: np.ndarray
    n_test: np.ndarray

    @property
    def ratio(self) -> float:
        """``n_test / n_train`` as the report computes it (mean sizes)."""
        return float(self.n_test.mean() / self.n_train.mean())

    @staticmethod
    def correlation(weights: np.ndarray) -> float:
        """Correlation of ``weights @ u`` between two random splits, ``u`` i.i.d. over groups:
        ``|E w|² / E|w|²`` (the covariance comes from the dataset's own mean, shared by its splits)."""
        return float(np.sum(weights.mean(axis=0) ** 2) / np.mean(np.sum(weights**2, axis=1)))


def split_pool(n_seeds: int) -> SplitPool:
    """Memberships of ``make_split``'s splits for seeds ``0 .. n_seeds - 1``."""
    labels = bundled_labels()
    groups = labels["ref"].unique()
    test, train = np.zeros((n_seeds, groups.size)), np.zeros((n_seeds, groups.size))
    for seed in tqdm(range(n_seeds), desc="make_split", leave=False):
        parts = make_split(labels, seed)
        for weights, part in ((test, "test"), (train, "train")):
            counts = parts[part]["ref"].value_counts()
            weights[seed] = counts.reindex(groups, fill_value=0).to_numpy() / counts.sum()
    group_sizes = labels["ref"].value_counts().reindex(groups).to_numpy(dtype=float)
    return SplitPool(test, train, n_train=(train > 0) @ group_sizes, n_test=(test > 0) @ group_sizes)


def scenario_scales(pool: SplitPool, var_split: float) -> dict[str, dict]:
    """Per scenario: the SDs of the per-group test and training effects, the train share and the correlation.

    The split effect ``a = w_test @ t + w_train @ g`` (``t, g`` i.i.d. normal per group, mean 0 over
    datasets, so Δ is the expected difference) has between-split correlation
    ``ρ = (1 - s) ρ_test + s ρ_train`` for a training share ``s`` of ``Var(a)``; its within-grid variance
    ``(1 - ρ) Var(a)`` is set to ``var_split`` (what ``split_seed_variance`` measures). Scenario (iii) takes
    ``s`` so that ``ρ = r / (1 + r) = n_test / (n_test + n_train)``, the correlation the corrected test assumes.
    """
    e_test = float(np.mean(np.sum(pool.test_weights**2, axis=1)))
    e_train = float(np.mean(np.sum(pool.train_weights**2, axis=1)))
    rho_test, rho_train = pool.correlation(pool.test_weights), pool.correlation(pool.train_weights)
    rho_nb = pool.ratio / (1.0 + pool.ratio)
    shares = {"seed_only": None, "test_composition": 0.0,
              "nadeau_bengio": (rho_nb - rho_test) / (rho_train - rho_test), "train_share_25": 0.25}
    out = {}
    for name, share in shares.items():
        if share is None:
            out[name] = {"train_share": None, "correlation": None, "sd_test_effect": 0.0, "sd_train_effect": 0.0}
            continue
        rho = (1.0 - share) * rho_test + share * rho_train
        var_a = var_split / (1.0 - rho)
        out[name] = {"train_share": share, "correlation": rho,
                     "sd_test_effect": float(np.sqrt((1.0 - share) * var_a / e_test)),
                     "sd_train_effect": float(np.sqrt(share * var_a / e_train))}
    return out


def split_mean_tests(means: np.ndarray, n_train: float, n_test: float, rope: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Naive p, corrected p, corrected-posterior (fallback) p and verdict of every grid's split means."""
    # scipy's ttest_1samp along the split axis is naive_paired_ttest, vectorised.
    naive = stats.ttest_1samp(means, 0.0, axis=1).pvalue
    corrected = np.array([corrected_resampled_ttest(m, n_train, n_test)[1] for m in means])
    verdicts = [verdict(*bayesian_correlated_ttest(m, n_train, n_test, rope)) for m in means]
    return naive, corrected, corrected, verdicts


def vc_tests(d: np.ndarray, ratio: float, rope: float) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """VC t p, Bayes-VC two-sided posterior tail, verdict and ``V̂`` of every grid of ``d`` (grids, J, S)."""
    m = balanced_moments(d)
    res = vc_ttest(m, ratio)
    post = vc_posterior(m, ratio)
    probs = np.stack(post.rope(rope), axis=1)
    return res.p, post.two_sided(), [verdict(*row) for row in probs], res.se**2


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """Type-I error and power of the per-split tests on the harness's real split structure, with seed noise.

    Every grid draws per-group test and training effects (:func:`scenario_scales`), takes J consecutive
    split seeds of :func:`split_pool` (fresh ones per grid) and S seeds of independent training noise
    ``e ~ N(0, var_seed)`` per split: ``d_js = Δ + a_j + e_js``. The same draws serve every J, S and Δ
    (common random numbers); all tests use the pool's ``n_test / n_train``.
    """
    grids, j_max, s_max = args.n_structured_grids, max(STRUCTURED_SPLITS), max(STRUCTURED_SEEDS)
    measured = measured_components(args.components)
    pool = split_pool(grids * j_max)
    ratio, n_train, n_test = pool.ratio, float(pool.n_train.mean()), float(pool.n_test.mean())
    scales = scenario_scales(pool, measured.var_split)
    mde_ref = vc_mde80(measured, 10, 2, ratio, args.alpha)
    index = np.arange(grids)[:, None] * j_max + np.arange(j_max)  # grid g: seeds g J_max .. g J_max + J_max - 1
    unit_test, unit_train = rng.standard_normal((2, grids, pool.test_weights.shape[1]))
    noise = np.sqrt(measured.var_seed) * rng.standard_normal((grids, j_max, s_max))
    rows, scenario_out = [], {}
    for name, scale in scales.items():
        a = (np.einsum("gjk,gk->gj", pool.test_weights[index], scale["sd_test_effect"] * unit_test)
             + np.einsum("gjk,gk->gj", pool.train_weights[index], scale["sd_train_effect"] * unit_train))
        within = float(np.mean(a.var(axis=1, ddof=1)))
        measured_rho = 1.0 - within / float(a.var()) if a.var() > 0 else None
        scenario_out[name] = {**scale, "label": SCENARIOS[name], "measured_correlation": measured_rho,
                              "measured_within_grid_split_variance": within}
        for j in STRUCTURED_SPLITS:
            for s in STRUCTURED_SEEDS:
                for k in tqdm(EFFECTS_IN_MDE, desc=f"{name} J={j} S={s}", leave=False):
                    d = k * mde_ref + a[:, :j, None] + noise[:, :j, :s]
                    naive, corrected, bayes, verdicts = split_mean_tests(d.mean(axis=2), n_train, n_test, args.rope)
                    vc, var_hat = corrected, np.full(grids, np.nan)
                    if uses_vc_test(j, s):
                        vc, bayes, verdicts, var_hat = vc_tests(d, ratio, args.rope)
                    means = d.mean(axis=(1, 2))
                    base = {"scenario": name, "n_splits": j, "n_seeds": s, "effect_in_mde": k,
                            "delta": k * mde_ref, "var_mean_over_mean_vhat": float(means.var(ddof=1) / var_hat.mean())}
                    for test, p in (("naive_t", naive), ("corrected_t", corrected), ("vc_t", vc), ("bayes_vc", bayes)):
                        rows.append({**base, "test": test, **rate(p < args.alpha)})
                    for v in VERDICTS:
                        rows.append({**base, "test": f"verdict: {v}", **rate(np.array(verdicts) == v)})
    table = pd.DataFrame(rows)
    tables["structured"] = table
    return {"settings": {"n_grids": grids, "measured_components": asdict(measured),
                         "components_from": str(args.components), "n_train": n_train,
                         "n_test": n_test, "test_train_ratio": ratio, "nadeau_bengio_correlation": ratio / (1 + ratio),
                         "test_effect_correlation": pool.correlation(pool.test_weights),
                         "train_effect_correlation": pool.correlation(pool.train_weights),
                         "mde80_vc_j10_s2": mde_ref, "split_seeds": f"0 .. {grids * j_max - 1}"},
            "scenarios": scenario_out,
            "design_table_measured": design_table(measured, ratio, alpha=args.alpha).to_dict("records")}


def plot(table: pd.DataFrame, summary: dict, alpha: float, path: Path) -> None:
    """Type-I error (top) and power at 1 MDE (bottom) per scenario, design and test."""
    components = summary["settings"]["measured_components"]
    designs = [(j, s) for j in STRUCTURED_SPLITS for s in STRUCTURED_SEEDS]
    labels = [f"{j}×{s}" for j, s in designs]
    fig = Figure(figsize=(16, 7), layout="constrained")
    axes = fig.subplots(2, len(SCENARIOS), sharey="row")
    for col, scenario in enumerate(SCENARIOS):
        for row, effect in enumerate((0.0, 1.0)):
            ax = axes[row, col]
            part = table[(table["scenario"] == scenario) & (table["effect_in_mde"] == effect)]
            for test, label in VC_TESTS.items():
                rates = part[part["test"] == test].set_index(["n_splits", "n_seeds"]).loc[designs, "rate"]
                ax.plot(labels, rates.to_numpy(), marker="o", color=TEST_COLOURS[test], label=label)
            if row == 0:
                ax.axhline(alpha, color="black", linestyle="--", linewidth=1)
                ax.axhspan(alpha, 0.06, color="grey", alpha=0.15, linewidth=0)
                ax.set_title(SCENARIOS[scenario].split(" (")[0].split(") ", 1)[-1], fontsize=10)
            ax.tick_params(axis="x", labelrotation=90, labelsize=8)
            ax.set_xlabel("splits × seeds per split")
        axes[0, col].set_ylim(0, 0.15)
    axes[0, 0].set_ylabel(f"type-I error (α = {alpha:g})")
    axes[1, 0].set_ylabel("power at Δ = 1 MDE80")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(VC_TESTS), fontsize=9)
    fig.suptitle("Per-split tests on bundled's split structure with seed noise (var_seed / var_split = "
                 f"{components['var_seed'] / components['var_split']:.2f}); MDE80 of the VC test at J = 10, S = 2; "
                 "the naive t runs off the top (structured.md)", fontsize=11)
    fig.savefig(path, dpi=150)


def markdown(table: pd.DataFrame, summary: dict) -> str:
    """One row per scenario, J and S; per test: type-I error / power at 0.5, 1, 2 MDE."""
    settings = summary["settings"]
    lines = [f"Per-split tests on `bundled`'s split structure ({settings['n_grids']} grids per row; "
             f"var_split = {settings['measured_components']['var_split']:.5f}, var_seed = "
             f"{settings['measured_components']['var_seed']:.5f} ({settings['components_from']}), n_test/n_train = "
             f"{settings['test_train_ratio']:.3f}; MDE80 of the VC test at J = 10, S = 2: "
             f"{settings['mde80_vc_j10_s2']:.3f} SRCC). Cells: type-I error / power at 0.5, 1, 2 × MDE. "
             "S = 1: the VC and Bayes-VC columns are the fallback (corrected test on split means).", "",
             "| scenario | train share | ρ (exact / measured) | J | S | " + " | ".join(VC_TESTS.values()) + " |",
             "|---|---|---|---|---|" + "---|" * len(VC_TESTS)]
    for scenario, info in summary["scenarios"].items():
        share = "—" if info["train_share"] is None else f"{info['train_share']:.3f}"
        rho = "—" if info["correlation"] is None else (f"{info['correlation']:.3f} / "
                                                       f"{info['measured_correlation']:.3f}")
        for j in STRUCTURED_SPLITS:
            for s in STRUCTURED_SEEDS:
                part = table[(table["scenario"] == scenario) & (table["n_splits"] == j) & (table["n_seeds"] == s)]
                cells = []
                for test in VC_TESTS:
                    rates = part[part["test"] == test].set_index("effect_in_mde")["rate"]
                    size = rates.loc[0.0]
                    mark = "**" if size > 0.06 else ""
                    cells.append(f"{mark}{size:.3f}{mark} / " + " · ".join(f"{rates.loc[k]:.2f}"
                                                                         for k in EFFECTS_IN_MDE[1:]))
                lines.append(f"| {scenario} | {share} | {rho} | {j} | {s} | " + " | ".join(cells) + " |")
    lines += ["", "Type-I errors above 0.06 in bold."]
    return "\n".join(lines) + "\n"
