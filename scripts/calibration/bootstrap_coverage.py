"""Study ``bootstrap_coverage``: coverage of the paired bootstrap CI of ΔSRCC on clustered test sets.

One test set of 7 references x 50 images whose heads misjudge some references (:class:`ClusteredTestSet`):
image bootstrap vs reference bootstrap (percentile, BCa). The coverages: ``summary.json``
(``bootstrap_coverage``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmark.analysis.stats import paired_bootstrap_srcc_ci

from .common import population_srcc, rate


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


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
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
