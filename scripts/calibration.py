"""Calibration study: error rates, power and verdicts of the suite's statistics on simulated grids.

Each simulated *cell* mimics the benchmark's protocol: one dataset, ``J`` random train/val/test
splits (whole reference groups on one side), and ridge-regression "heads" trained on every split;
per-split test SRCC differences go through the suite's own functions (``benchmark.analysis.stats``). Studies:

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
    Three heads of equal quality on 6 cells: type-I error of the Friedman test over (cell x split)
    blocks — what the report did — vs over independent cell blocks (``independent_blocks``).
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

Model. Features ``x ~ N(0, I)`` form a shared block and one private block per head; ``y = x·c +
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
per-cell values to one CSV per study, and ``type1_error.png`` / ``verdicts.png`` show the null and
verdict studies; the default run takes about two minutes on two CPU cores. These are ridge-regression
simulations, not the suite's own training cells: a null grid run through ``dor-bench`` (two identical
heads, different head seeds) remains the check that the tests are calibrated where they are used.

Usage::

    python scripts/calibration.py --out /tmp/calibration --seed 0
    python scripts/calibration.py --out /tmp/coverage33 --studies bootstrap_coverage --coverage-refs 33
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
    VERDICTS,
    bayesian_correlated_ttest,
    corrected_resampled_ttest,
    friedman_test,
    independent_blocks,
    mde80,
    naive_paired_ttest,
    paired_bootstrap_srcc_ci,
    rowwise_srcc,
    verdict,
    wilcoxon_p,
)
from benchmark.analysis.stats.bootstrap import _pearson_rows, _weighted_centred_ranks

NULL_TESTS = {
    "corrected_t": "corrected resampled t-test",
    "naive_t": "naive paired t-test",
    "wilcoxon": "Wilcoxon signed-rank",
}
STUDIES = ("null", "effects", "friedman", "reference_groups", "cross_dataset", "bootstrap_coverage")
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
    """Friedman type-I error, three equal heads: (cell x split) blocks vs independent cell blocks."""
    n_cells = 6
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
                     "p_cell_blocks": friedman_test(cell_blocks)[1]})
    table = pd.DataFrame(rows)
    tables["friedman"] = table
    return {
        "settings": {**asdict(model), "n_cells": n_cells, "n_grids": args.n_friedman_grids},
        "cell_split_blocks": {"n_blocks": n_cells * model.n_splits, **rate(table["p_cell_split_blocks"] < args.alpha)},
        "cell_blocks": {"n_blocks": n_cells, **rate(table["p_cell_blocks"] < args.alpha)},
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


# ---------------------------------------------------------------------------------------------- output
def plot_type1(null: dict, alpha: float, path: Path) -> None:
    """Bar chart of each test's type-I error with its 95 % CI and the nominal alpha line."""
    tests = null["tests"]
    labels = [tests[k]["label"] for k in NULL_TESTS]
    rates = np.array([tests[k]["rate"] for k in NULL_TESTS])
    err = np.array([[tests[k]["rate"] - tests[k]["ci95_low"] for k in NULL_TESTS],
                    [tests[k]["ci95_high"] - tests[k]["rate"] for k in NULL_TESTS]])
    # A bare Figure (no pyplot) renders through the Agg canvas: no GUI backend, no global state.
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.bar(labels, rates, yerr=err, capsize=6, color=["#4C72B0", "#DD8452", "#55A868"])
    ax.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"nominal α = {alpha:g}")
    ax.set_ylabel(f"type-I error ({tests['corrected_t']['n']} null cells, 95 % Wilson CI)")
    ax.set_title("Calibration of per-cell tests under the null")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def plot_verdicts(studies: dict[str, dict], path: Path) -> None:
    """Stacked verdict rates per setting and true difference."""
    colors = {"a better": "#55A868", "b better": "#C44E52", "equivalent": "#4C72B0", "undecided": "#BBBBBB"}
    settings = list(studies)
    fig = Figure(figsize=(4 * len(settings), 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=150)


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
        print(f"friedman  (cell x split) blocks {fmt(f['cell_split_blocks'])}; cell blocks {fmt(f['cell_blocks'])}")
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
        "bootstrap_coverage": bootstrap_coverage_study,
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
