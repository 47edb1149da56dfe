"""Study ``assumed_r``: what the population test's assumed split correlation costs when it is wrong.

The population test assumes r = n_test/n_train; if the true r were larger, how often would it reject a true
null? Exact, by quadrature over every split share (J = 10 and 20, S = 2, the VC worst-share rule). The rates:
``assumed_r.csv`` and ``summary.json`` (``assumed_r``).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from benchmark.analysis.stats import SHARES, rejection_rate, worst_share_critical

ASSUMED_R_TRUE = (0.5, 1.0, 1.5)
"""True split correlations r the ``assumed_r`` study tries against the assumed n_test/n_train."""


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
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
