"""Calibration study: error rates, power and verdicts of the suite's statistics on simulated grids.

Two kinds of simulation go through the suite's own functions (``benchmark.analysis.stats``).

**Per-run differences with split and seed noise** (the tests of ``stats.csv``). A per-run difference is
``d_js = Δ + a_j + e_js``: ``a_j`` the split's own difference, ``e_js`` one run's training noise.

``structured``
    The harness's real split structure: ``bundled``'s 18 content groups at their real sizes (16 of 100
    images, 2 of 50), split by ``benchmark.data.splits.make_split`` (0.6/0.2/0.2) with fresh split seeds
    per grid. Every grid draws a per-group test effect ``t_k`` and training effect ``g_k`` (i.i.d.
    normal, mean 0 over datasets, so Δ is the expected difference over datasets — the population target —
    and the dataset's own mean is what correlates its splits); ``a_j`` = mean of ``t`` over split j's test
    images + mean of ``g`` over its training images, scaled so that its within-grid variance is the
    committed default grid's ``var_split`` (dor - mse, efficientnet_lite0, read from ``--components``, by
    default ``results/default/stats.csv``), plus seed noise ``e ~ N(0, var_seed)`` from the same row. Four
    scenarios: (i) no split effect, (ii) test composition only, (iii) the training share that makes the
    between-split correlation ``n_test / (n_test + n_train)`` — what the population test assumes — and (iv)
    a 25 % training share. The training share is an INPUT of each scenario, not a measurement: (iii) checks
    the test's algebra under its own assumption, (iv) what a wrong assumption costs.
    For J in {10, 20, 50} and S in {1, 2, 3, 5}: type-I error and power at 0, 0.5, 1 and 2 x the VC test's
    MDE80 at J = 10, S = 2, of the naive paired t (the dataset test, here against the population truth),
    the corrected t (both on split means), the VC t and the
    Bayes-VC significance rule (``variance_components_test``'s two decisions; with one seed per split
    both fall back to the corrected test), and the Bayes verdict rates.
``assumed_r``
    The population test assumes r = n_test/n_train; if the true r were larger, how often would it reject a
    true null? Exact, by quadrature over every split share (J = 10 and 20, S = 2, the VC worst-share rule).
``shares``
    The df rules of the VC t over every split share ``λ = σ²_a / (σ²_a + σ²_e / S)`` on the exact normal
    model (r = 0.32): type-I errors computed exactly (``rejection_rate``), the Bayes-VC rule's simulated.
    This is the evidence for the rule ``vc_ttest`` uses (worst share for J < 30, Satterthwaite for J >= 30).

What the harness null (``scripts/calibration_harness.py``: one head against itself under another seed of
the same split) can and cannot show: its per-split differences have no split x head term (``a_j = 0``), so
they are i.i.d. seed noise — scenario (i) on the real training noise (its real distribution, failures
included). It shows whether a test is liberal or how conservative it is when only seed noise varies
(the corrected test, which inflates that noise by ``1 + rJ``, then never rejects). It cannot show the
calibration of any test when the split itself changes the difference (scenarios ii-iv), in particular the
training-set share under which every test that assumes ``ρ = n_test / (n_test + n_train)`` is liberal,
nor the power against a split-dependent difference; only a simulation with a split effect, as here, does.

**Ridge-regression heads** (one seed per split, no training noise: the corrected test's fallback
setting, and the per-split statistics where the correlation arises from real fitting on overlapping
training sets rather than from a model of it). Each simulated *cell* is one dataset, ``J`` random
train/val/test splits (whole reference groups on one side) and ridge "heads" trained on every split:

``null``
    Two heads of exactly equal expected quality, 500 independent rows, 80/20 splits: type-I error
    of the corrected resampled t-test vs the naive t-test and the per-split Wilcoxon test.
``effects``
    Independent rows, 60/20/20 splits, true SRCC differences 0, ROPE/2, 2 ROPE and 3 ROPE (ROPE =
    0.01 SRCC): (i) with no difference, the rates of "a better"/"b better" verdicts of the
    correlated Bayesian t-test and the corrected test's type-I error; (ii) inside the ROPE, the rate
    of "equivalent"; (iii) at 2-3 ROPEs, the power of the corrected test and the verdict rates —
    for a suite-like setting (500 rows, heads that differ a lot) and a large one (2000 rows,
    similar heads) where equivalence can be shown.
``friedman``
    Three heads of equal quality on 10 cells (``MIN_INDEPENDENT_BLOCKS``): type-I error of the Friedman
    test over (cell x split) blocks vs over independent cell blocks (``independent_blocks``), and how
    often the critical-difference diagram is drawn and a pairwise signed-rank test with Holm rejects.
``reference_groups``
    The ``effects`` study with the suite's protocol: 33 references x 50 images, splits by
    reference, features and label noise shared within a reference.
``cross_dataset``
    Train on subsets of dataset X, test on the whole of a fixed dataset Y in every split, heads
    equal: type-I error of the tests one could apply (see
    ``benchmark.analysis.stats.frequentist.cross_dataset_caveat``).
``bootstrap_coverage``
    Coverage of the paired bootstrap CI of ΔSRCC on one test set of 7 references x 50 images whose
    heads misjudge some references: image bootstrap vs reference bootstrap (percentile, BCa).

Ridge model. Features ``x ~ N(0, I)`` form a shared block and one private block per head; ``y = x·c +
noise``; head ``h`` is a ridge regression on [shared, private_h]. With equal private variances
swapping two heads' blocks leaves the joint distribution unchanged, so the heads have exactly
equal expected SRCC (the null) while their predictions are strongly correlated, like heads on one
backbone. An effect is injected by giving head A's private block more signal; the true SRCC
difference is then known in closed form: ``(y, prediction)`` is bivariate normal over the
population, so a fitted head's population SRCC is ``(6/pi) asin(r/2)`` with ``r`` its Pearson
correlation, computed from the fitted coefficients; averaged over 500 training sets it gives the
true difference, and head A's private variance is solved for a target difference with brentq.
With reference groups a share of the feature variance and of the noise is common to a reference
(``x = sqrt(s) u_ref + sqrt(1-s) v``), which leaves the marginal distribution — and the closed form
— unchanged.

Every figure goes to ``summary.json`` (rates with 95 % Wilson intervals and their counts), the
per-cell or per-row values to one CSV per study, ``structured.md`` / ``shares.md`` tabulate the two
new studies and ``structured.png``, ``shares.png``, ``type1_error.png`` and ``verdicts.png`` plot them;
the default run takes about 20 minutes on two CPU cores (most of it ``make_split`` for 100,000 split seeds
and the Bayes-VC quadrature).

Usage (from the repository root, so that ``benchmark`` is this checkout)::

    PYTHONPATH=. python scripts/calibration.py --out results/calibration --seed 0
    PYTHONPATH=. python scripts/calibration.py --out /tmp/vc --studies structured shares --n-structured-grids 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import optimize, stats
from tqdm import tqdm

from benchmark.provenance import write_provenance
from benchmark.analysis.stats import (
    DEFAULT_ROPE,
    MIN_INDEPENDENT_BLOCKS,
    SATTERTHWAITE_MIN_SPLITS,
    SHARES,
    VERDICTS,
    SplitSeedMoments,
    VarianceComponents,
    balanced_moments,
    bayesian_correlated_ttest,
    corrected_resampled_ttest,
    critical_difference_decision,
    design_table,
    friedman_test,
    independent_blocks,
    mde80,
    naive_paired_ttest,
    pairwise_signed_rank_holm,
    paired_bootstrap_srcc_ci,
    rejection_rate,
    rowwise_srcc,
    uses_vc_test,
    vc_mde80,
    vc_posterior,
    vc_ttest,
    verdict,
    wilcoxon_p,
    worst_share_critical,
)
from benchmark.data.bundled import DEFAULT_RECIPE
from benchmark.data.splits import make_split
from benchmark.analysis.stats.bootstrap import _pearson_rows, _weighted_centred_ranks

NULL_TESTS = {
    "corrected_t": "corrected resampled t-test",
    "naive_t": "naive paired t-test",
    "wilcoxon": "Wilcoxon signed-rank",
}
STUDIES = ("null", "effects", "friedman", "reference_groups", "cross_dataset", "bootstrap_coverage", "shares",
           "structured", "assumed_r")
"""In this order each study gets its child of the seed's generator: appending a study leaves the others' numbers."""
EFFECTS_IN_ROPES = (0.0, 0.5, 2.0, 3.0)
"""True SRCC differences of the effect studies, in ROPE units."""
TRAINING_SETS_FOR_TRUTH = 500
"""Training sets averaged for a true SRCC difference (its Monte Carlo SE is reported; ~1e-4 SRCC)."""


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class GridModel:
    """One simulated dataset per cell, ``n_splits`` random splits by reference, one ridge head per private block."""

    n_refs: int = 500
    images_per_ref: int = 1
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    n_splits: int = 10
    n_shared: int = 16
    n_private: int = 4
    shared_variance: float = 1.0
    private_variances: tuple[float, ...] = (0.1, 0.1)
    noise_variance: float = 0.5
    ref_feature_share: float = 0.0
    ref_noise_share: float = 0.0
    ridge_lambda: float = 1.0

    @property
    def n_heads(self) -> int:
        return len(self.private_variances)

    @property
    def n_images(self) -> int:
        return self.n_refs * self.images_per_ref

    @property
    def train_refs(self) -> int:
        return round(self.fractions[0] * self.n_refs)

    @property
    def test_refs(self) -> int:
        return round(self.fractions[2] * self.n_refs)

    @property
    def n_train(self) -> int:
        return self.train_refs * self.images_per_ref

    @property
    def n_test(self) -> int:
        return self.test_refs * self.images_per_ref

    @property
    def coefficients(self) -> np.ndarray:
        private = [np.full(self.n_private, np.sqrt(v / self.n_private)) for v in self.private_variances]
        return np.concatenate([np.full(self.n_shared, np.sqrt(self.shared_variance / self.n_shared)), *private])

    def head_columns(self, head: int) -> np.ndarray:
        start = self.n_shared + head * self.n_private
        return np.r_[0 : self.n_shared, start : start + self.n_private]


def draw_datasets(model: GridModel, n_cells: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n_cells, n_images, q)`` and labels ``(n_cells, n_images)``; images of a reference are adjacent."""
    q, m = model.coefficients.size, model.images_per_ref
    s, k = model.ref_feature_share, model.ref_noise_share
    x = np.sqrt(1.0 - s) * rng.standard_normal((n_cells, model.n_images, q))
    noise = np.sqrt(model.noise_variance * (1.0 - k)) * rng.standard_normal((n_cells, model.n_images))
    if s > 0:
        x += np.sqrt(s) * np.repeat(rng.standard_normal((n_cells, model.n_refs, q)), m, axis=1)
    if k > 0:
        noise += np.sqrt(model.noise_variance * k) * np.repeat(rng.standard_normal((n_cells, model.n_refs)), m, axis=1)
    return x, x @ model.coefficients + noise


def draw_splits(
    model: GridModel, n_cells: int, n_splits: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image indices of the training and test parts, ``(n_cells, n_splits, n_train)`` and ``(..., n_test)``.

    References are shuffled and cut train | val | test, as ``benchmark.data.splits.make_split`` does
    for equal-sized groups; the validation part is not used (no model selection in ridge).
    """
    refs = rng.permuted(np.broadcast_to(np.arange(model.n_refs), (n_cells, n_splits, model.n_refs)), axis=-1)
    images = np.arange(model.images_per_ref)

    def expand(r: np.ndarray) -> np.ndarray:
        return (r[..., None] * model.images_per_ref + images).reshape(*r.shape[:-1], -1)

    return expand(refs[..., : model.train_refs]), expand(refs[..., model.n_refs - model.test_refs :])


def ridge_heads(
    model: GridModel, x: np.ndarray, y: np.ndarray, x_new: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Closed-form ridge of every head on centred data, batched: (coefficients, predictions on ``x_new``).

    Hand-written (sklearn's Ridge solves one problem per call; this solves thousands at once, from
    one Gram matrix of all features per training set). Shapes: ``x`` (..., n, q), ``y`` (..., n, t)
    for ``t`` targets, ``x_new`` (..., m, q) -> per head (..., q_head, t) and (..., m, t) (no
    predictions without ``x_new``).
    """
    mx = x.mean(axis=-2, keepdims=True)
    my = y.mean(axis=-2, keepdims=True)
    centred = x - mx
    gram, rhs = centred.swapaxes(-1, -2) @ centred, centred.swapaxes(-1, -2) @ (y - my)
    betas, preds = [], []
    for head in range(model.n_heads):
        cols = model.head_columns(head)
        ridge = gram[..., cols[:, None], cols] + model.ridge_lambda * np.eye(cols.size)
        beta = np.linalg.solve(ridge, rhs[..., cols, :])
        betas.append(beta)
        if x_new is not None:
            preds.append((x_new - mx)[..., cols] @ beta + my)
    return betas, preds


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (cells, splits, k) of per-cell arrays ``a`` (cells, n[, q])."""
    if a.ndim == 2:
        return np.take_along_axis(a[:, None], idx, axis=2)
    return np.take_along_axis(a[:, None], idx[..., None], axis=2)


def simulate_cells(model: GridModel, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Test SRCC of every head on every split of ``n_cells`` simulated cells: ``(n_cells, n_splits, n_heads)``."""
    x, y = draw_datasets(model, n_cells, rng)
    train, test = draw_splits(model, n_cells, model.n_splits, rng)
    preds = ridge_heads(model, _take(x, train), _take(y, train)[..., None], _take(x, test))[1]
    y_test = _take(y, test)
    return np.stack([rowwise_srcc(y_test, p[..., 0]) for p in preds], axis=-1)


def simulate(
    model: GridModel, n_cells: int, rng: np.random.Generator, desc: str, chunk_images: int = 500_000
) -> np.ndarray:
    """:func:`simulate_cells` in chunks of about ``chunk_images`` simulated images, with a progress bar."""
    chunk = max(1, chunk_images // (model.n_images * model.n_splits))
    parts = []
    with tqdm(total=n_cells, desc=desc, unit="cell", leave=False) as bar:
        for start in range(0, n_cells, chunk):
            size = min(chunk, n_cells - start)
            parts.append(simulate_cells(model, size, rng))
            bar.update(size)
    return np.concatenate(parts)


# ------------------------------------------------------------------------------- known true differences
def population_srcc(r: np.ndarray) -> np.ndarray:
    """Spearman correlation of a bivariate normal pair with Pearson correlation ``r`` (Pearson 1907)."""
    return 6.0 / np.pi * np.arcsin(r / 2.0)


class TrueDifference:
    """True SRCC difference (head 0 minus head 1) as a function of head 0's private variance.

    The label is ``y = y_rest + sqrt(v_A) z_A`` with ``z_A`` the (unit-variance) sum of head A's
    private features, and ridge is linear in ``y``, so for every training set the fitted
    coefficients are ``b0 + sqrt(v_A) b1``: fitted once, they give the population SRCC of both heads
    for any ``v_A`` in closed form, on the same training sets (a smooth function to solve).
    """

    def __init__(self, model: GridModel, rng: np.random.Generator, n_sets: int = TRAINING_SETS_FOR_TRUTH):
        if model.n_heads != 2:
            raise ValueError(f"true differences are defined for two heads, got {model.n_heads}")
        self.model = model
        base = replace(model, private_variances=(0.0, model.private_variances[1]))
        cols_a = model.head_columns(0)[model.n_shared :]
        fits: list[list[np.ndarray]] = [[], []]
        chunk = max(1, 1_000_000 // model.n_images)
        for start in range(0, n_sets, chunk):
            size = min(chunk, n_sets - start)
            x, y_rest = draw_datasets(base, size, rng)
            z_a = x[..., cols_a].sum(axis=-1) / np.sqrt(model.n_private)
            train = draw_splits(model, size, 1, rng)[0][:, 0]
            targets = np.stack([y_rest, z_a], axis=-1)
            x_train = np.take_along_axis(x, train[..., None], axis=1)
            betas = ridge_heads(model, x_train, np.take_along_axis(targets, train[..., None], axis=1))[0]
            for head in range(2):
                fits[head].append(betas[head])
        self.fits = [np.concatenate(f) for f in fits]  # per head: (n_sets, q_head, 2) for targets (y_rest, z_A)

    def per_set(self, var_a: float) -> np.ndarray:
        """Population SRCC difference of the two heads fitted on each training set."""
        m = replace(self.model, private_variances=(var_a, self.model.private_variances[1]))
        c = m.coefficients
        sd_y = np.sqrt(c @ c + m.noise_variance)
        srcc = []
        for head in range(2):
            beta = self.fits[head] @ np.array([1.0, np.sqrt(var_a)])
            r = beta @ c[m.head_columns(head)] / (np.linalg.norm(beta, axis=-1) * sd_y)
            srcc.append(population_srcc(r))
        return srcc[0] - srcc[1]

    def __call__(self, var_a: float) -> float:
        return float(np.mean(self.per_set(var_a)))

    def standard_error(self, var_a: float) -> float:
        """Monte Carlo standard error of the true difference at ``var_a``."""
        d = self.per_set(var_a)
        return float(d.std(ddof=1) / np.sqrt(d.size))

    def solve(self, target: float) -> float:
        """Head A's private variance giving a true difference ``target`` (>= 0)."""
        var_b = self.model.private_variances[1]
        if target == 0.0:
            return var_b  # exact by symmetry
        high = 2.0 * var_b + 0.05
        while self(high) < target:
            high *= 2.0
        return float(optimize.brentq(lambda v: self(v) - target, var_b, high, xtol=1e-10))


# ---------------------------------------------------------------------------------------------- helpers
def rate(hits: np.ndarray | int, n: int | None = None) -> dict:
    """Rate of a boolean array (or a count out of ``n``) with its 95 % Wilson interval."""
    k = int(np.sum(hits)) if n is None else int(hits)
    n = int(np.size(hits)) if n is None else n
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"rate": k / n, "count": k, "n": n, "ci95_low": float(ci.low), "ci95_high": float(ci.high)}


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


# ---------------------------------------------------------------------------------------------- studies
def null_study(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
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


def effects_study(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """(i)-(iii) on independent rows: a suite-like setting and a large one with similar heads."""
    settings = {
        "suite_like_500_rows": GridModel(n_refs=500, private_variances=(0.1, 0.1)),
        "large_2000_rows_similar_heads": GridModel(n_refs=2000, private_variances=(0.005, 0.005)),
    }
    return {name: effect_study(model, args.n_effect_sims, args.alpha, args.rope, rng, name, tables)
            for name, model in settings.items()}


def reference_groups_study(args: argparse.Namespace, rng: np.random.Generator,
                           tables: dict[str, pd.DataFrame]) -> dict:
    """The effects study under the suite's protocol: 33 references x 50 images, splits by reference."""
    model = GridModel(n_refs=33, images_per_ref=50, ref_feature_share=0.5, ref_noise_share=0.5,
                      private_variances=(0.02, 0.02))
    return effect_study(model, args.n_group_sims, args.alpha, args.rope, rng, "reference_groups", tables)


def friedman_study(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """Three equal heads on 10 cells: Friedman over (cell x split) vs independent cell blocks, and post-hoc rates.

    Over the cell blocks also: how often the critical-difference diagram would be drawn
    (``critical_difference_decision``) and how often any pair is significant by the pairwise signed-rank
    tests with Holm (``pairwise_signed_rank_holm``) — both family-wise errors under this null.
    """
    n_cells = MIN_INDEPENDENT_BLOCKS
    model = GridModel(n_refs=500, private_variances=(0.1, 0.1, 0.1))
    srcc = simulate(model, args.n_friedman_grids * n_cells, rng, "friedman")
    heads = ["h0", "h1", "h2"]
    rows = []
    for grid in range(args.n_friedman_grids):
        values = srcc[grid * n_cells : (grid + 1) * n_cells]  # (cells, splits, heads)
        split_blocks = pd.DataFrame(values.reshape(-1, len(heads)), columns=heads)
        runs = pd.DataFrame({
            "backbone": "sim", "dataset": np.repeat(np.arange(n_cells), model.n_splits * len(heads)),
            "split": np.tile(np.repeat(np.arange(model.n_splits), len(heads)), n_cells),
            "head": np.tile(heads, n_cells * model.n_splits), "srcc": values.ravel()})
        cell_blocks, reason = independent_blocks(runs, "srcc", seed=None)
        if cell_blocks is None:
            raise RuntimeError(reason)
        rows.append({"p_cell_split_blocks": friedman_test(split_blocks)[1],
                     "p_cell_blocks": friedman_test(cell_blocks)[1],
                     "cd_drawn": critical_difference_decision(cell_blocks, args.alpha)[0],
                     "any_pair_holm": bool(pairwise_signed_rank_holm(cell_blocks, args.alpha)["significant"].any())})
    table = pd.DataFrame(rows)
    tables["friedman"] = table
    return {
        "settings": {**asdict(model), "n_cells": n_cells, "n_grids": args.n_friedman_grids},
        "cell_split_blocks": {"n_blocks": n_cells * model.n_splits, **rate(table["p_cell_split_blocks"] < args.alpha)},
        "cell_blocks": {"n_blocks": n_cells, **rate(table["p_cell_blocks"] < args.alpha)},
        "critical_difference_drawn": rate(table["cd_drawn"]),
        "pairwise_signed_rank_holm_any": rate(table["any_pair_holm"]),
    }


@dataclass(frozen=True)
class TargetDataset:
    """The fixed test dataset Y of a cross-dataset cell (independent rows; both heads' blocks alike)."""

    n_rows: int = 300
    private_variance: float = 0.1
    noise_variance: float = 0.5


def simulate_cross_cells(source: GridModel, target: TargetDataset, n_cells: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels of Y ``(n_cells, n_y)`` and both heads' predictions on all of Y ``(n_cells, J, 2, n_y)``.

    Heads train on the training part of each split of a source dataset X (the rest of X is unused);
    every split tests on the same Y.
    """
    x, y = draw_datasets(source, n_cells, rng)
    train = draw_splits(source, n_cells, source.n_splits, rng)[0]
    y_model = replace(source, private_variances=(target.private_variance,) * 2, noise_variance=target.noise_variance,
                      n_refs=target.n_rows, images_per_ref=1)
    x_y, y_y = draw_datasets(y_model, n_cells, rng)
    preds = ridge_heads(source, _take(x, train), _take(y, train)[..., None], x_y[:, None])[1]
    return y_y, np.stack([p[..., 0] for p in preds], axis=2)


def test_set_bootstrap_variance(y: np.ndarray, preds: np.ndarray, rng: np.random.Generator, n_resamples: int) -> float:
    """Bootstrap variance, over the rows of the fixed test set, of the split-averaged ΔSRCC."""
    n = y.size
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)

    def ranks(v: np.ndarray) -> np.ndarray:
        return _weighted_centred_ranks(np.unique(v, return_inverse=True)[1], weights)

    ry = ranks(y)
    delta = np.mean([_pearson_rows(ry, ranks(p[0]), weights) - _pearson_rows(ry, ranks(p[1]), weights)
                     for p in preds], axis=0)
    return float(delta.var(ddof=1))


def cross_dataset_study(args: argparse.Namespace, rng: np.random.Generator,
                        tables: dict[str, pd.DataFrame]) -> dict:
    """Null cross-dataset cells: which variance factor would make a t-test on per-split differences valid?"""
    source = GridModel(n_refs=500)
    targets = {"same_distribution": TargetDataset(),
               "shifted": TargetDataset(private_variance=0.3, noise_variance=1.0)}
    j, n_train = source.n_splits, source.n_train
    factors = {
        "naive_t": 1.0 / j,
        "corrected_t_test_set_size": 1.0 / j + targets["same_distribution"].n_rows / n_train,
        "corrected_t_within_dataset_ratio": 1.0 / j + source.n_test / n_train,
        "training_overlap": 1.0 / j + n_train / (source.n_images - n_train),
    }
    out: dict = {"settings": {"source": asdict(source), "n_train": n_train, "n_sims": args.n_cross_sims,
                              "bootstrap_resamples": args.cross_bootstrap, "variance_factors": factors}}
    for name, target in targets.items():
        rows = []
        chunk = 50
        for start in tqdm(range(0, args.n_cross_sims, chunk), desc=f"cross {name}", leave=False):
            y_y, preds = simulate_cross_cells(source, target, min(chunk, args.n_cross_sims - start), rng)
            srcc = rowwise_srcc(np.broadcast_to(y_y[:, None, None], preds.shape), preds)
            for cell, d in enumerate(srcc[:, :, 0] - srcc[:, :, 1]):
                rows.append({"mean_delta": d.mean(), "var_delta": d.var(ddof=1),
                             "test_set_variance": test_set_bootstrap_variance(y_y[cell], preds[cell], rng,
                                                                              args.cross_bootstrap)})
        table = pd.DataFrame(rows)
        tables[f"cross_dataset_{name}"] = table
        m, s2, v_test = table["mean_delta"], table["var_delta"], table["test_set_variance"]
        result = {"target": asdict(target),
                  "variance_ratio_empirical": float(m.var(ddof=1) / s2.mean()),
                  "mean_sd_delta": float(np.sqrt(s2).mean()),
                  "share_of_var_mean_from_test_set": float(v_test.mean() / m.var(ddof=1))}
        for key, factor in factors.items():
            p = 2.0 * stats.t.sf(np.abs(m / np.sqrt(factor * s2)), j - 1)
            result[key] = {"variance_factor": factor, **rate(p < args.alpha)}
        z = m / np.sqrt(factors["training_overlap"] * s2 + v_test)
        result["test_set_bootstrap_plus_training_overlap"] = rate(2.0 * stats.norm.sf(np.abs(z)) < args.alpha)
        out[name] = result
    return out


@dataclass(frozen=True)
class ClusteredTestSet:
    """One test set of references; each head has its own error per reference (content it misjudges)."""

    n_refs: int = 7
    images_per_ref: int = 50
    ref_mos_sd: float = 0.7
    ref_error_sd: float = 0.5
    noise_a: float = 0.5
    noise_b: float = 0.7

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ref = np.repeat(np.arange(self.n_refs), self.images_per_ref)
        mos = rng.normal(0.0, self.ref_mos_sd, self.n_refs)[ref] + rng.standard_normal(ref.size)
        preds = [mos + rng.normal(0.0, self.ref_error_sd, self.n_refs)[ref] + noise * rng.standard_normal(ref.size)
                 for noise in (self.noise_a, self.noise_b)]
        return mos, preds[0], preds[1], ref

    def true_delta(self) -> float:
        """Population ΔSRCC: (MOS, prediction) is bivariate normal over references and images."""
        var_mos = self.ref_mos_sd**2 + 1.0
        r_a = np.sqrt(var_mos / (var_mos + self.ref_error_sd**2 + self.noise_a**2))
        r_b = np.sqrt(var_mos / (var_mos + self.ref_error_sd**2 + self.noise_b**2))
        return float(population_srcc(r_a) - population_srcc(r_b))


def bootstrap_coverage_study(args: argparse.Namespace, rng: np.random.Generator,
                             tables: dict[str, pd.DataFrame]) -> dict:
    """Coverage of nominal 95 % paired bootstrap CIs of ΔSRCC on clustered test sets."""
    methods: dict[str, Callable[..., tuple[float, float]]] = {
        "image_BCa": lambda m, a, b, g, s: paired_bootstrap_srcc_ci(m, a, b, args.coverage_resamples, seed=s),
        "reference_percentile": lambda m, a, b, g, s: paired_bootstrap_srcc_ci(
            m, a, b, args.coverage_resamples, seed=s, groups=g),
        "reference_BCa": lambda m, a, b, g, s: paired_bootstrap_srcc_ci(
            m, a, b, args.coverage_resamples, seed=s, method="BCa", groups=g),
    }
    out: dict = {"settings": {"n_sims": args.n_coverage_sims, "n_resamples": args.coverage_resamples}}
    for n_refs in args.coverage_refs:
        design = ClusteredTestSet(n_refs=n_refs)
        truth = design.true_delta()
        rows = []
        for sim in tqdm(range(args.n_coverage_sims), desc=f"coverage {n_refs} refs", leave=False):
            mos, pred_a, pred_b, ref = design.draw(rng)
            for name, ci in methods.items():
                low, high = ci(mos, pred_a, pred_b, ref, sim)
                rows.append({"sim": sim, "method": name, "low": low, "high": high})
        table = pd.DataFrame(rows)
        tables[f"bootstrap_coverage_{n_refs}refs"] = table
        covered = (table["low"] <= truth) & (truth <= table["high"])
        out[f"{n_refs}_refs"] = {
            "design": asdict(design), "true_delta": truth,
            **{name: {**rate(covered[table["method"] == name]),
                      "mean_width": float((table["high"] - table["low"])[table["method"] == name].mean())}
               for name in methods},
        }
    return out


# ------------------------------------------------------------------- per-run differences: split and seed noise
COMPONENTS_ROW = {"backbone": "efficientnet_lite0", "head_a": "dor", "head_b": "mse", "metric": "srcc"}
"""The ``stats.csv`` row whose variance components the structured study simulates."""


def measured_components(stats_csv: Path) -> VarianceComponents:
    """Within-grid split variance of the true per-split difference and one run's training noise, in SRCC², of
    :data:`COMPONENTS_ROW` in a committed ``stats.csv``."""
    table = pd.read_csv(stats_csv)
    row = table[(table[list(COMPONENTS_ROW)] == pd.Series(COMPONENTS_ROW)).all(axis=1)
                & (table["analysis"] == "complete-case")].iloc[0]
    return VarianceComponents(float(row["var_split"]), float(row["var_seed"]))


ASSUMED_R_TRUE = (0.5, 1.0, 1.5)
"""True split correlations r the ``assumed_r`` study tries against the assumed n_test/n_train."""
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


def structured_study(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
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


def assumed_r_study(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """Type-I error of the population test (VC worst-share rule, assumed r = n_test/n_train of the default
    grid) when the true split correlation is larger, exactly by quadrature, at every split share."""
    assumed = 1.0 / 3.0
    rows = []
    for j in (10, 20):
        nu, h = j, 0.5  # S = 2
        critical = worst_share_critical(j, nu, h, assumed, args.alpha)
        for true_r in (assumed, *ASSUMED_R_TRUE):
            for share in SHARES:
                var_split, var_seed = share, (1.0 - share) / h
                rate_ = rejection_rate(0.0, var_split, var_seed, j, nu, h, assumed,
                                       lambda df: np.full_like(df, critical), true_ratio=true_r)
                rows.append({"n_splits": j, "n_seeds": 2, "assumed_r": assumed, "true_r": true_r, "share": share,
                             "rate": rate_})
    table = pd.DataFrame(rows)
    tables["assumed_r"] = table
    worst = table.loc[table.groupby(["n_splits", "true_r"])["rate"].idxmax()]
    return {"max_over_shares": worst.to_dict("records")}


def share_study(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
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


# ---------------------------------------------------------------------------------------------- output
def plot_type1(null: dict, alpha: float, path: Path) -> None:
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


TEST_COLOURS = {"naive_t": "#DD8452", "corrected_t": "#4C72B0", "vc_t": "#55A868", "bayes_vc": "#8172B3",
                "satterthwaite": "#C44E52", "df_j_minus_1": "#937860"}


def plot_structured(table: pd.DataFrame, summary: dict, alpha: float, path: Path) -> None:
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


def plot_shares(table: pd.DataFrame, alpha: float, path: Path) -> None:
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


def structured_markdown(table: pd.DataFrame, summary: dict) -> str:
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


def shares_markdown(table: pd.DataFrame) -> str:
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--rope", type=float, default=DEFAULT_ROPE, help="ROPE half-width in SRCC (default 0.01)")
    ap.add_argument("--n-sims", type=int, default=1000, help="null cells of the null study (default 1000)")
    ap.add_argument("--n-samples", type=int, default=500, help="dataset size of the null study")
    ap.add_argument("--n-splits", type=int, default=10, help="J of the null study")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="test fraction of the null study")
    ap.add_argument("--n-effect-sims", type=int, default=500, help="cells per setting and effect (default 500)")
    ap.add_argument("--n-group-sims", type=int, default=500, help="cells per effect with reference groups")
    ap.add_argument("--n-friedman-grids", type=int, default=500)
    ap.add_argument("--n-cross-sims", type=int, default=300)
    ap.add_argument("--cross-bootstrap", type=int, default=200, help="test-set bootstrap resamples per cross cell")
    ap.add_argument("--n-coverage-sims", type=int, default=200)
    ap.add_argument("--coverage-refs", type=int, nargs="+", default=[7], help="test-set references (default 7)")
    ap.add_argument("--coverage-resamples", type=int, default=1000)
    ap.add_argument("--n-structured-grids", type=int, default=2000, help="grids per row of the structured study")
    ap.add_argument("--n-share-grids", type=int, default=10_000, help="simulated grids per share (Bayes-VC)")
    ap.add_argument("--components", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "default"
                    / "stats.csv", help="stats.csv whose dor - mse (efficientnet_lite0) components the structured "
                                        "study simulates")
    args = ap.parse_args(argv)
    if args.n_sims < 1 or args.n_splits < 2 or not 0 < args.test_fraction < 1:
        ap.error("need --n-sims >= 1, --n-splits >= 2 and 0 < --test-fraction < 1")
    if not 0 < args.alpha < 1 or args.rope <= 0:
        ap.error("need 0 < --alpha < 1 and --rope > 0")
    return args


def verdict_studies(summary: dict) -> dict[str, dict]:
    """Every setting with verdict rates: the effects settings and the reference-groups study."""
    out = dict(summary.get("effects", {}))
    if "reference_groups" in summary:
        out["reference_groups"] = summary["reference_groups"]
    return out


def print_summary(summary: dict) -> None:
    def fmt(r: dict) -> str:
        return f"{r['rate']:.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}] ({r['count']}/{r['n']})"

    def rates(res: dict) -> str:
        return "; ".join(f"{k} {v['rate']:.3f}" for k, v in res.items() if isinstance(v, dict) and "rate" in v)

    if "null" in summary:
        for t in summary["null"]["tests"].values():
            print(f"null  {t['label']:>28}: type-I error {fmt(t)}")
    for name, res in verdict_studies(summary).items():
        for e in res["effects"]:
            test = e.get("corrected_t_type1") or e["corrected_t_power"]
            verdicts = ", ".join(f"{v} {e['verdicts'][v]['rate']:.3f}" for v in VERDICTS)
            print(f"{name}  Δ={e['true_delta']:.4f}: corrected rejects {test['rate']:.3f}; {verdicts}; "
                  f"mean MDE80 {e['mean_mde80']:.4f}")
    if "friedman" in summary:
        f = summary["friedman"]
        print(f"friedman  (cell x split) blocks {fmt(f['cell_split_blocks'])}; cell blocks {fmt(f['cell_blocks'])}; "
              f"CD drawn {fmt(f['critical_difference_drawn'])}; any pair (signed-rank, Holm) "
              f"{fmt(f['pairwise_signed_rank_holm_any'])}")
    if "shares" in summary:
        for row in summary["shares"]["max_over_shares"]:
            print(f"shares  J={row['n_splits']:3d} S={row['n_seeds']} {row['test']:>14}: max type-I "
                  f"{row['rate']:.3f} at share {row['share']:g}")
    if "assumed_r" in summary:
        for row in summary["assumed_r"]["max_over_shares"]:
            print(f"assumed_r  J={row['n_splits']} true r {row['true_r']:.2f}: max type-I {row['rate']:.3f} at share "
                  f"{row['share']:g}")
    if "structured" in summary:
        for name, info in summary["structured"]["scenarios"].items():
            print(f"structured  {name}: train share {info['train_share']}, correlation {info['correlation']} "
                  f"(measured {info['measured_correlation']})")
    for study in ("cross_dataset", "bootstrap_coverage"):
        for name, res in summary.get(study, {}).items():
            if name != "settings":
                print(f"{study} {name}: {rates(res)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    runners: dict[str, Callable[[argparse.Namespace, np.random.Generator, dict], dict]] = {
        "null": null_study, "effects": effects_study, "friedman": friedman_study,
        "reference_groups": reference_groups_study, "cross_dataset": cross_dataset_study,
        "bootstrap_coverage": bootstrap_coverage_study, "shares": share_study, "structured": structured_study,
        "assumed_r": assumed_r_study,
    }
    summary: dict = {"settings": {"seed": args.seed, "alpha": args.alpha, "rope": args.rope}, "durations_s": {}}
    tables: dict[str, pd.DataFrame] = {}
    # One generator per study (spawned from the seed), so a study's numbers do not depend on which others run.
    generators = dict(zip(STUDIES, np.random.default_rng(args.seed).spawn(len(STUDIES)), strict=True))
    for name in STUDIES:
        if name in args.studies:
            t0 = time.perf_counter()
            summary[name] = runners[name](args, generators[name], tables)
            summary["durations_s"][name] = round(time.perf_counter() - t0, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(args.out / f"{name}.csv", index=False)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if "null" in summary:
        plot_type1(summary["null"], args.alpha, args.out / "type1_error.png")
    if verdict_studies(summary):
        plot_verdicts(verdict_studies(summary), args.out / "verdicts.png")
    if "shares" in summary:
        plot_shares(tables["shares"], args.alpha, args.out / "shares.png")
        (args.out / "shares.md").write_text(shares_markdown(tables["shares"]), encoding="utf-8")
    if "structured" in summary:
        plot_structured(tables["structured"], summary["structured"], args.alpha, args.out / "structured.png")
        (args.out / "structured.md").write_text(structured_markdown(tables["structured"], summary["structured"]),
                                                encoding="utf-8")
    duration = time.perf_counter() - start
    write_provenance(
        args.out,
        [sys.executable, *sys.argv] if argv is None else ["scripts/calibration.py", *argv],
        duration_s=round(duration, 2),
        study_durations_s=summary["durations_s"],
    )
    print_summary(summary)
    print(f"wrote {args.out} in {duration:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
