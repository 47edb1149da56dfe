"""What the studies share: rates with Wilson intervals, the population SRCC of a normal pair, plot colours."""

from __future__ import annotations

import numpy as np
from scipy import stats


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson interval of a rate ``k / n``."""
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def rate(hits: np.ndarray | int, n: int | None = None) -> dict:
    """Rate of a boolean array (or a count out of ``n``) with its 95 % Wilson interval."""
    k = int(np.sum(hits)) if n is None else int(hits)
    n = int(np.size(hits)) if n is None else n
    low, high = wilson_interval(k, n)
    return {"rate": k / n, "count": k, "n": n, "ci95_low": low, "ci95_high": high}


def population_srcc(r: np.ndarray) -> np.ndarray:
    """Spearman correlation of a bivariate normal pair with Pearson correlation ``r`` (Pearson 1907)."""
    return 6.0 / np.pi * np.arcsin(r / 2.0)


TEST_COLOURS = {"naive_t": "#DD8452", "corrected_t": "#4C72B0", "vc_t": "#55A868", "bayes_vc": "#8172B3",
                "satterthwaite": "#C44E52", "df_j_minus_1": "#937860"}
"""One colour per test in the structured and shares plots."""

