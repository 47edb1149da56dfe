"""Calibration study: type-I error of the per-cell tests on simulated null grids.

Each simulated "cell" mimics the benchmark's protocol: one dataset of ``n`` samples, ``J`` random
train/test splits (80/20 by default, so training sets overlap as in IQA), and two "heads" of exactly
equal expected quality trained on every split; the per-split SRCC differences are tested with the
corrected resampled t-test (Nadeau & Bengio 2003), the naive paired t-test and the Wilcoxon
signed-rank test. Under this null a calibrated test rejects at level alpha in a fraction alpha of
the simulations.

Null model. Features ``x ~ N(0, I)`` split into a shared block ``S`` and two private blocks ``A``
and ``B`` of equal size; ``y = x_S·c_S + x_A·c_P + x_B·c_P + noise``. Head A is a ridge regression
on ``[x_S, x_A]``, head B the same ridge on ``[x_S, x_B]``. Swapping the A and B blocks leaves the
joint distribution unchanged, so the two heads have exactly equal expected SRCC for every training
set size — the null hypothesis of the corrected test — while their predictions are strongly
correlated, like two heads on one backbone. A new dataset is drawn for every simulation, so the
dataset-to-dataset variation that the naive test ignores is present.

Usage::

    python scripts/calibration.py --out results/calibration --n-sims 500 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from tqdm import tqdm

from benchmark.provenance import write_provenance
from benchmark.stats import (
    corrected_resampled_ttest,
    naive_paired_ttest,
    rowwise_srcc,
    wilcoxon_p,
)

TESTS = {
    "corrected_t": "corrected resampled t-test",
    "naive_t": "naive paired t-test",
    "wilcoxon": "Wilcoxon signed-rank",
}


@dataclass(frozen=True)
class NullModel:
    """Settings of the simulated null grid (see the module docstring)."""

    n_samples: int = 500
    n_splits: int = 10
    test_fraction: float = 0.2
    n_shared: int = 16
    n_private: int = 4
    shared_variance: float = 1.0
    private_variance: float = 0.1
    noise_variance: float = 0.5
    ridge_lambda: float = 1.0

    @property
    def n_test(self) -> int:
        return round(self.n_samples * self.test_fraction)

    @property
    def n_train(self) -> int:
        return self.n_samples - self.n_test


def _ridge_test_predictions(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, lam: float
) -> np.ndarray:
    """Closed-form ridge fitted on each split, batched over simulations and splits.

    Hand-written (sklearn's Ridge solves one problem per call; this solves thousands at once).
    Shapes: x (S, n, q), y (S, n), train (S, J, n_train), test (S, J, n_test) -> (S, J, n_test).
    """
    xs = x[:, None]  # (S, 1, n, q)
    x_tr = np.take_along_axis(xs, train[..., None], axis=2)
    x_te = np.take_along_axis(xs, test[..., None], axis=2)
    y_tr = np.take_along_axis(y[:, None], train, axis=2)
    mx = x_tr.mean(axis=2, keepdims=True)
    my = y_tr.mean(axis=2, keepdims=True)
    xc = x_tr - mx
    gram = np.einsum("sjnp,sjnq->sjpq", xc, xc) + lam * np.eye(x.shape[-1])
    rhs = np.einsum("sjnp,sjn->sjp", xc, y_tr - my)
    beta = np.linalg.solve(gram, rhs[..., None])[..., 0]
    return np.einsum("sjnp,sjp->sjn", x_te - mx, beta) + my


def simulate_chunk(model: NullModel, n_sims: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-split SRCC of both heads for ``n_sims`` simulated null cells.

    Returns
    -------
    (srcc_a, srcc_b) : tuple of numpy.ndarray
        Each of shape ``(n_sims, n_splits)``.
    """
    s, p = model.n_shared, model.n_private
    x = rng.standard_normal((n_sims, model.n_samples, s + 2 * p))
    coef = np.concatenate(
        [
            np.full(s, np.sqrt(model.shared_variance / s)),
            np.full(2 * p, np.sqrt(model.private_variance / p)),
        ]
    )
    y = x @ coef + np.sqrt(model.noise_variance) * rng.standard_normal((n_sims, model.n_samples))
    order = np.broadcast_to(np.arange(model.n_samples), (n_sims, model.n_splits, model.n_samples))
    perm = rng.permuted(order, axis=-1)
    train, test = perm[..., : model.n_train], perm[..., model.n_train :]
    y_test = np.take_along_axis(y[:, None], test, axis=2)
    cols_a = np.r_[0:s, s : s + p]
    cols_b = np.r_[0:s, s + p : s + 2 * p]
    srcc = []
    for cols in (cols_a, cols_b):
        pred = _ridge_test_predictions(x[..., cols], y, train, test, model.ridge_lambda)
        srcc.append(rowwise_srcc(y_test, pred))
    return srcc[0], srcc[1]


def run_tests(deltas: np.ndarray, model: NullModel) -> pd.DataFrame:
    """Apply the three tests to each row (one simulated cell) of ``deltas``."""
    rows = []
    for d in deltas:
        t_c, p_c = corrected_resampled_ttest(d, model.n_train, model.n_test)
        t_n, p_n = naive_paired_ttest(d)
        rows.append(
            {
                "mean_delta": float(d.mean()),
                "sd_delta": float(d.std(ddof=1)),
                "t_corrected_t": t_c,
                "p_corrected_t": p_c,
                "t_naive_t": t_n,
                "p_naive_t": p_n,
                "p_wilcoxon": wilcoxon_p(d),
            }
        )
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame, model: NullModel, alpha: float) -> dict:
    """Type-I error of each test with a 95 % Wilson interval, plus diagnostics of the simulation."""
    n = len(table)
    out: dict = {}
    for key, label in TESTS.items():
        k = int((table[f"p_{key}"] < alpha).sum())
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        out[key] = {
            "label": label,
            "rejections": k,
            "n_sims": n,
            "type1_error": k / n,
            "ci95_low": float(ci.low),
            "ci95_high": float(ci.high),
        }
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
    return {"tests": out, "diagnostics": diagnostics}


def plot_type1(summary: dict, alpha: float, path: Path) -> None:
    """Bar chart of each test's type-I error with its 95 % CI and the nominal alpha line."""
    tests = summary["tests"]
    labels = [tests[k]["label"] for k in TESTS]
    rates = np.array([tests[k]["type1_error"] for k in TESTS])
    err = np.array(
        [
            [tests[k]["type1_error"] - tests[k]["ci95_low"] for k in TESTS],
            [tests[k]["ci95_high"] - tests[k]["type1_error"] for k in TESTS],
        ]
    )
    # A bare Figure (no pyplot) renders through the Agg canvas: no GUI backend, no global state.
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.bar(labels, rates, yerr=err, capsize=6, color=["#4C72B0", "#DD8452", "#55A868"])
    ax.axhline(alpha, color="black", linestyle="--", linewidth=1, label=f"nominal α = {alpha:g}")
    n = tests["corrected_t"]["n_sims"]
    ax.set_ylabel(f"type-I error ({n} null cells, 95 % Wilson CI)")
    ax.set_title("Calibration of per-cell tests under the null")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = NullModel()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--n-sims", type=int, default=500, help="simulated null cells (default 500)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--n-samples", type=int, default=defaults.n_samples, help="dataset size per cell")
    ap.add_argument("--n-splits", type=int, default=defaults.n_splits, help="J, resampling splits per cell")
    ap.add_argument("--test-fraction", type=float, default=defaults.test_fraction)
    ap.add_argument("--chunk", type=int, default=50, help="cells simulated per vectorised batch")
    args = ap.parse_args(argv)
    if args.n_sims < 1 or args.n_splits < 2 or not 0 < args.test_fraction < 1:
        ap.error("need --n-sims >= 1, --n-splits >= 2 and 0 < --test-fraction < 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    model = NullModel(n_samples=args.n_samples, n_splits=args.n_splits, test_fraction=args.test_fraction)
    rng = np.random.default_rng(args.seed)
    srcc_a, srcc_b = [], []
    with tqdm(total=args.n_sims, desc="null cells", unit="cell") as bar:
        done = 0
        while done < args.n_sims:
            size = min(args.chunk, args.n_sims - done)
            a, b = simulate_chunk(model, size, rng)
            srcc_a.append(a)
            srcc_b.append(b)
            done += size
            bar.update(size)
    srcc_a_all, srcc_b_all = np.concatenate(srcc_a), np.concatenate(srcc_b)
    sim_s = time.perf_counter() - start

    table = run_tests(srcc_a_all - srcc_b_all, model)
    table.insert(0, "sim", np.arange(args.n_sims))
    table["srcc_a"] = srcc_a_all.mean(axis=1)
    table["srcc_b"] = srcc_b_all.mean(axis=1)
    summary = summarise(table, model, args.alpha)
    summary["settings"] = {
        **asdict(model),
        "n_train": model.n_train,
        "n_test": model.n_test,
        "n_sims": args.n_sims,
        "alpha": args.alpha,
        "seed": args.seed,
    }

    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "calibration.csv", index=False)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    plot_type1(summary, args.alpha, args.out / "type1_error.png")
    duration = time.perf_counter() - start
    write_provenance(
        args.out,
        [sys.executable, *sys.argv] if argv is None else ["scripts/calibration.py", *argv],
        duration_s=round(duration, 2),
        simulation_s=round(sim_s, 2),
        n_sims=args.n_sims,
    )
    for key in TESTS:
        t = summary["tests"][key]
        print(
            f"{t['label']:>28}: type-I error {t['type1_error']:.3f} "
            f"[{t['ci95_low']:.3f}, {t['ci95_high']:.3f}] ({t['rejections']}/{t['n_sims']})"
        )
    print(f"wrote {args.out} in {duration:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
