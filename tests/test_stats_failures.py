"""Tests of benchmark.analysis.stats.failures: exact McNemar on failure indicators, worst-rank fill."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark.analysis.stats import StatsInputError, paired_failure_test, variance_components_test, worst_rank_fill


def test_paired_failure_test_known_values() -> None:
    # 20 paired runs: both fail in 2, only A in 7, only B in 1, neither in 10.
    a = [1, 1] + [1] * 7 + [0] + [0] * 10
    b = [1, 1] + [0] * 7 + [1] + [0] * 10
    res = paired_failure_test(a, b)
    assert (res.n_pairs, res.failures_a, res.failures_b, res.only_a, res.only_b) == (20, 9, 3, 7, 1)
    # Exact two-sided binomial on the 8 discordant pairs: 2 * P(X >= 7 | n = 8, 1/2) = 2 * 9 / 256.
    assert res.p == pytest.approx(18 / 256)
    assert res.p == pytest.approx(sps.binomtest(7, 8).pvalue)
    assert paired_failure_test(b, a).p == res.p  # symmetric
    assert paired_failure_test(np.array(a, bool), pd.Series(b).astype(bool)).only_a == 7  # booleans, Series


def test_paired_failure_test_edge_cases() -> None:
    assert paired_failure_test([0, 0, 0], [0, 0, 0]).p == 1.0
    assert paired_failure_test([1, 1], [1, 1]).p == 1.0  # both always fail: no discordant pair
    assert paired_failure_test([1] * 6, [0] * 6).p == pytest.approx(2 / 64)  # the smallest p with 6 pairs
    with pytest.raises(StatsInputError, match="aligned non-empty"):
        paired_failure_test([1, 0], [1])
    with pytest.raises(StatsInputError, match="booleans"):
        paired_failure_test([0.5, 1], [0, 1])
    with pytest.raises(StatsInputError, match="1-D"):
        paired_failure_test([[1, 0]], [[0, 1]])


def test_worst_rank_fill_known_values() -> None:
    a, b = worst_rank_fill([0.8, 0.0, 0.6, 0.7], [0.75, 0.65, np.nan, 0.72], [0, 1, 0, 0], [0, 0, 1, 0])
    assert a.tolist() == [0.8, 0.6, 0.6, 0.7]  # the worst observed score is A's 0.6
    assert b.tolist() == [0.75, 0.65, 0.6, 0.72]
    # Errors (lower is better): the worst is the highest observed.
    a, b = worst_rank_fill([0.3, 9.9], [0.4, 0.5], [False, True], [False, False], higher_is_better=False)
    assert a.tolist() == [0.3, 0.5] and b.tolist() == [0.4, 0.5]


def test_worst_rank_fill_feeds_the_paired_test() -> None:
    # Head A fails in split 2 (scored 0 by the report); with the worst-rank fill its deficit shrinks.
    splits = np.repeat(np.arange(6), 2)
    a = np.array([0.80, 0.82, 0.78, 0.79, 0.0, 0.0, 0.81, 0.80, 0.77, 0.79, 0.82, 0.81])
    b = np.array([0.79, 0.80, 0.77, 0.78, 0.76, 0.75, 0.80, 0.79, 0.78, 0.77, 0.80, 0.80])
    failed_a = a == 0.0
    filled_a, filled_b = worst_rank_fill(a, b, failed_a, np.zeros_like(failed_a))
    assert filled_a[failed_a].tolist() == [0.75, 0.75] and (filled_b == b).all()
    scored = variance_components_test(pd.DataFrame({"split": splits, "delta": a - b}), 200 / 600)
    ranked = variance_components_test(pd.DataFrame({"split": splits, "delta": filled_a - filled_b}), 200 / 600)
    assert scored.mean < 0 < ranked.mean


def test_worst_rank_fill_rejects_bad_input() -> None:
    with pytest.raises(StatsInputError, match="every run of both heads failed"):
        worst_rank_fill([0.0], [0.0], [1], [1])
    with pytest.raises(StatsInputError, match="NaN/inf score"):
        worst_rank_fill([np.nan, 0.5], [0.4, 0.5], [0, 0], [0, 0])
    with pytest.raises(StatsInputError, match="aligned 1-D"):
        worst_rank_fill([0.5, 0.6], [0.4], [0, 0], [0])
