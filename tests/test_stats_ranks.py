"""Tests of the critical-difference decision and the pairwise signed-rank tests with Holm."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark.analysis.stats import (
    MIN_INDEPENDENT_BLOCKS,
    StatsInputError,
    critical_difference_decision,
    friedman_test,
    holm,
    pairwise_signed_rank_holm,
)


def _scores(n_blocks: int, gap: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.7, 0.05, n_blocks)
    return pd.DataFrame({"mse": base, "coral": base + gap / 2 + rng.normal(0, 0.01, n_blocks),
                         "dor": base + gap + rng.normal(0, 0.01, n_blocks)})


def test_min_independent_blocks_is_ten() -> None:
    assert MIN_INDEPENDENT_BLOCKS == 10


def test_critical_difference_decision_requires_blocks_heads_and_a_rejecting_friedman() -> None:
    draw, reason = critical_difference_decision(_scores(12, 0.05))
    assert draw and reason.endswith("the critical-difference diagram is warranted")
    assert friedman_test(_scores(12, 0.05))[1] < 0.05
    same = _scores(12, 0.0, seed=3)
    p = friedman_test(same)[1]
    assert p >= 0.05
    draw, reason = critical_difference_decision(same)
    assert not draw and reason.startswith("Friedman chi2 = ") and "no critical-difference diagram" in reason
    assert critical_difference_decision(_scores(9, 0.05)) == (
        False, "only 9 independent block(s); a Friedman test / critical-difference diagram needs at least 10")
    assert critical_difference_decision(None)[0] is False
    assert critical_difference_decision(_scores(12, 0.05)[["mse", "dor"]])[1].startswith("only 2 head(s)")
    with pytest.raises(StatsInputError, match="alpha"):
        critical_difference_decision(_scores(12, 0.05), alpha=2.0)


def test_pairwise_signed_rank_holm_matches_scipy_and_statsmodels() -> None:
    scores = _scores(10, 0.02, seed=1)
    scores["dor"] = scores["mse"] + np.linspace(0.01, 0.03, 10)  # better in every block
    table = pairwise_signed_rank_holm(scores)
    assert list(zip(table["head_a"], table["head_b"], strict=True)) == [("mse", "coral"), ("mse", "dor"),
                                                                       ("coral", "dor")]
    expected = [sps.wilcoxon(scores[a] - scores[b]).pvalue for a, b in (("mse", "coral"), ("mse", "dor"),
                                                                        ("coral", "dor"))]
    assert table["p"].tolist() == pytest.approx(expected)
    assert table["p_holm"].tolist() == pytest.approx(holm(expected).tolist())
    assert table["significant"].tolist() == [p < 0.05 for p in holm(expected)]
    row = table.iloc[1]  # mse - dor: dor is better in every block
    assert (row["n_blocks"], row["n_a_better"]) == (10, 0)
    assert row["p"] == pytest.approx(2 / 2**10)
    assert row["mean_diff"] == pytest.approx((scores["mse"] - scores["dor"]).mean())
    with pytest.raises(StatsInputError, match="at least 2 heads"):
        pairwise_signed_rank_holm(scores[["mse"]])
