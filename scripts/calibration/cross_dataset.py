"""Study ``cross_dataset``: train on subsets of dataset X, test on the whole of a fixed dataset Y in every split.

Heads equal: the type-I error of the tests one could apply (see
``benchmark.analysis.stats.frequentist.cross_dataset_caveat``). The rates: ``summary.json``
(``cross_dataset``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from benchmark.analysis.stats import rowwise_srcc, weighted_srcc

from .common import rate
from .ridge import GridModel, draw_datasets, draw_splits, ridge_heads, take


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
    preds = ridge_heads(source, take(x, train), take(y, train)[..., None], x_y[:, None])[1]
    return y_y, np.stack([p[..., 0] for p in preds], axis=2)


def test_set_bootstrap_variance(y: np.ndarray, preds: np.ndarray, rng: np.random.Generator, n_resamples: int) -> float:
    """Bootstrap variance, over the rows of the fixed test set, of the split-averaged ΔSRCC."""
    n = y.size
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    delta = np.mean([weighted_srcc(y, p[0], weights) - weighted_srcc(y, p[1], weights) for p in preds], axis=0)
    return float(delta.var(ddof=1))


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
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
