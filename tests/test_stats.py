"""Tests of benchmark.analysis.stats (hand-computed values) and benchmark.provenance (file fields)."""

from __future__ import annotations

import gc
import json
import math
import os
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from benchmark import provenance
from benchmark.analysis.stats import (
    StatsInputError,
    VarianceComponents,
    across_dataset_wilcoxon,
    average_ranks,
    bayesian_correlated_ttest,
    corrected_resampled_ci,
    corrected_resampled_ttest,
    corrected_ttest_power,
    cross_dataset_caveat,
    friedman_test,
    holm,
    independent_blocks,
    mde80,
    naive_paired_ttest,
    nemenyi_critical_difference,
    paired_bootstrap_srcc_ci,
    paired_bootstrap_srcc_cis,
    rowwise_srcc,
    split_seed_variance,
    verdict,
    wilcoxon_p,
)

DELTAS = [0.01, 0.02, 0.03, 0.00, 0.04, 0.01, 0.02, 0.03, 0.02, 0.02]
# By hand: mean = 0.20 / 10 = 0.02; squared deviations sum to 12e-4, so var(ddof=1) = 12e-4 / 9.
MEAN, VAR = 0.02, 12e-4 / 9


def test_corrected_resampled_ttest_hand_computed() -> None:
    t, p = corrected_resampled_ttest(DELTAS, n_train=800, n_test=200)
    t_expected = MEAN / math.sqrt((1 / 10 + 200 / 800) * VAR)  # = 2.9277...
    assert t == pytest.approx(t_expected, rel=1e-12)
    assert t == pytest.approx(2.92770, abs=1e-4)
    assert p == pytest.approx(2 * sps.t.sf(t_expected, df=9), rel=1e-12)
    t_neg, p_neg = corrected_resampled_ttest([-d for d in DELTAS], n_train=800, n_test=200)
    assert (t_neg, p_neg) == pytest.approx((-t, p))


def test_corrected_resampled_ci_hand_computed() -> None:
    # se = sqrt((1/10 + 200/800) * 12e-4/9) = 0.0068313005; t_{0.975, 9} = 2.2621571627 -> half = 0.0154534754.
    low, high = corrected_resampled_ci(DELTAS, n_train=800, n_test=200)
    assert (low, high) == pytest.approx((0.02 - 0.0154534754, 0.02 + 0.0154534754), abs=1e-9)
    # It inverts the corrected test: at confidence 1 - p the interval just touches 0.
    p = corrected_resampled_ttest(DELTAS, 800, 200)[1]
    assert corrected_resampled_ci(DELTAS, 800, 200, confidence=1 - p)[0] == pytest.approx(0.0, abs=1e-12)
    assert corrected_resampled_ci([0.01] * 5, 800, 200) == pytest.approx((0.01, 0.01))  # zero variance
    with pytest.raises(StatsInputError, match=r"confidence must lie in \(0, 1\)"):
        corrected_resampled_ci(DELTAS, 800, 200, confidence=95)


def test_naive_ttest_hand_computed_and_more_liberal() -> None:
    t, p = naive_paired_ttest(DELTAS)
    t_expected = MEAN / math.sqrt(VAR / 10)  # = 5.4772...
    assert t == pytest.approx(t_expected, rel=1e-12)
    assert p == pytest.approx(2 * sps.t.sf(t_expected, df=9), rel=1e-10)
    assert p < corrected_resampled_ttest(DELTAS, 800, 200)[1]


def test_ttests_zero_variance_conventions() -> None:
    assert corrected_resampled_ttest([0.01] * 10, 800, 200) == (math.inf, 0.0)
    assert corrected_resampled_ttest([-0.01] * 10, 800, 200) == (-math.inf, 0.0)
    assert corrected_resampled_ttest([0.0] * 10, 800, 200) == (0.0, 1.0)
    assert naive_paired_ttest([0.01] * 10) == (math.inf, 0.0)
    assert naive_paired_ttest([0.0] * 10) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("deltas", "kwargs", "match"),
    [
        ([0.01], {}, "at least 2"),
        ([0.01, float("nan"), 0.02], {}, "non-finite"),
        ([0.01, 0.02], {"n_train": 0}, "positive"),
    ],
)
def test_corrected_ttest_rejects_bad_input(deltas, kwargs, match) -> None:
    args = {"n_train": 800, "n_test": 200, **kwargs}
    with pytest.raises(StatsInputError, match=match) as info:
        corrected_resampled_ttest(deltas, **args)
    assert isinstance(info.value, ValueError)


# se = sqrt((1/10 + 200/800) * 12e-4/9) of DELTAS, the scale of the corrected test and of the posterior.
SE = math.sqrt(0.35 * VAR)


def test_bayesian_correlated_ttest_closed_form() -> None:
    p_below, p_rope, p_above = bayesian_correlated_ttest(DELTAS, n_train=800, n_test=200, rope=0.01)
    # Standardised bounds (-0.01 - 0.02) / SE = -4.3916 and (0.01 - 0.02) / SE = -1.4639 on t with 9 df.
    assert p_below == pytest.approx(sps.t.cdf(-0.03 / SE, df=9), abs=1e-9)
    assert p_above == pytest.approx(sps.t.sf(-0.01 / SE, df=9), abs=1e-9)
    assert p_rope == pytest.approx(sps.t.cdf(-0.01 / SE, df=9) - sps.t.cdf(-0.03 / SE, df=9), abs=1e-9)
    assert (round(p_below, 4), round(p_rope, 4), round(p_above, 4)) == (0.0009, 0.0878, 0.9114)
    assert p_below + p_rope + p_above == pytest.approx(1.0, abs=1e-12)
    # A - B and B - A mirror each other.
    mirrored = bayesian_correlated_ttest([-d for d in DELTAS], 800, 200, rope=0.01)
    assert mirrored == pytest.approx((p_above, p_rope, p_below), abs=1e-12)


def test_bayesian_posterior_matches_corrected_test_and_ci() -> None:
    # Same scale as the corrected test: with no ROPE, P(delta < 0) is the one-sided p-value ...
    p = corrected_resampled_ttest(DELTAS, 800, 200)[1]
    assert bayesian_correlated_ttest(DELTAS, 800, 200, rope=0.0)[0] == pytest.approx(p / 2, rel=1e-9)
    # ... and a ROPE centred on the mean with the CI's half-width holds 95 % of the posterior.
    shifted = np.array(DELTAS) - MEAN
    low, high = corrected_resampled_ci(shifted, 800, 200)
    assert bayesian_correlated_ttest(shifted, 800, 200, rope=high)[1] == pytest.approx(0.95, abs=1e-9)


def test_bayesian_correlated_ttest_zero_variance_point_mass() -> None:
    assert bayesian_correlated_ttest([0.02] * 5, 600, 200, rope=0.01) == (0.0, 0.0, 1.0)
    assert bayesian_correlated_ttest([-0.02] * 5, 600, 200, rope=0.01) == (1.0, 0.0, 0.0)
    assert bayesian_correlated_ttest([0.01] * 5, 600, 200, rope=0.01) == (0.0, 1.0, 0.0)  # on the edge: inside
    assert bayesian_correlated_ttest([0.0] * 5, 600, 200, rope=0.0) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("deltas", "kwargs", "match"),
    [
        ([0.01], {}, "at least 2"),
        ([0.01, float("inf")], {}, "non-finite"),
        ([0.01, 0.02], {"n_test": -5}, "positive"),
        ([0.01, 0.02], {"rope": -0.01}, "rope must be"),
        ([0.01, 0.02], {"rope": float("nan")}, "rope must be"),
    ],
)
def test_bayesian_correlated_ttest_rejects_bad_input(deltas, kwargs, match) -> None:
    with pytest.raises(StatsInputError, match=match):
        bayesian_correlated_ttest(deltas, **{"n_train": 600, "n_test": 200, "rope": 0.01, **kwargs})


def test_verdict_thresholds() -> None:
    assert verdict(0.0, 0.05, 0.95) == "a better"  # exactly at the threshold counts
    assert verdict(0.96, 0.04, 0.0) == "b better"
    assert verdict(0.02, 0.97, 0.01) == "equivalent"
    assert verdict(0.02, 0.94, 0.04) == "undecided"
    assert verdict(0.0, 0.1, 0.9, threshold=0.9) == "a better"
    assert verdict(*bayesian_correlated_ttest(DELTAS, 800, 200)) == "undecided"  # P(a better) = 0.911
    assert verdict(*bayesian_correlated_ttest(DELTAS, 800, 200), threshold=0.9) == "a better"
    with pytest.raises(StatsInputError, match="summing to 1"):
        verdict(0.5, 0.5, 0.5)
    with pytest.raises(StatsInputError, match=r"threshold must lie in \(0.5, 1\]"):
        verdict(0.0, 0.5, 0.5, threshold=0.5)


def test_mde80_has_80_percent_power_closed_form() -> None:
    for j in (3, 10, 30):
        for ratio in (0.25, 1 / 3):
            mde = mde80(0.03, j, ratio)
            assert corrected_ttest_power(mde, 0.03, j, ratio) == pytest.approx(0.80, abs=1e-9)
    assert corrected_ttest_power(0.0, 0.03, 10, 1 / 3) == pytest.approx(0.05, abs=1e-12)
    # J = 10: the 80 % noncentrality of t with 9 df is that of a one-sample t-test of 10 values,
    # statsmodels' effect size times sqrt(10) (= 3.1496); times sqrt(1/10 + 1/3) * 0.03.
    noncentrality = TTestPower().solve_power(nobs=10, alpha=0.05, power=0.8) * math.sqrt(10)
    assert noncentrality == pytest.approx(3.1496, abs=1e-4)
    assert mde80(0.03, 10, 1 / 3) == pytest.approx(noncentrality * math.sqrt(0.1 + 1 / 3) * 0.03, rel=1e-6)
    assert mde80(0.0, 10, 1 / 3) == 0.0


def test_mde80_power_by_simulating_the_corrected_test() -> None:
    # Model under which the corrected test is exact: d_j = delta + u + e_j, var(u) = ratio * sigma^2 is the
    # dataset's shared part, e_j the split-to-split part (sigma^2, what var(d, ddof=1) estimates).
    sigma, j, ratio, n_sims = 0.03, 10, 1 / 3, 4000
    delta = mde80(sigma, j, ratio)
    rng = np.random.default_rng(11)
    u = math.sqrt(ratio) * sigma * rng.standard_normal((n_sims, 1))
    d = delta + u + sigma * rng.standard_normal((n_sims, j))
    rejected = np.mean([corrected_resampled_ttest(row, n_train=3, n_test=1)[1] < 0.05 for row in d])
    assert rejected == pytest.approx(0.80, abs=0.02)  # 3.2 binomial SEs
    null = np.mean([corrected_resampled_ttest(row - delta, 3, 1)[1] < 0.05 for row in d])
    assert null == pytest.approx(0.05, abs=0.011)


def test_mde80_decreases_with_splits_towards_the_floor() -> None:
    floor = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * math.sqrt(1 / 3) * 0.03  # 2.8016 * ... = 0.04853
    assert floor == pytest.approx(0.04853, abs=1e-5)
    mdes = [mde80(0.03, j, 1 / 3) for j in (2, 5, 10, 30, 100, 1000, 100000)]
    assert all(a > b for a, b in zip(mdes, mdes[1:]))
    assert all(m > floor for m in mdes)
    assert mdes[-1] == pytest.approx(floor, rel=1e-3)
    assert mdes[0] == pytest.approx(0.4473, abs=1e-4)  # J = 2: one degree of freedom, 9 times the floor


def test_mde80_rejects_bad_design() -> None:
    for args, match in (((-0.1, 10, 0.25), "SD"), ((0.03, 1, 0.25), "n_splits >= 2"),
                        ((0.03, 10, -1.0), "test_train_ratio")):
        with pytest.raises(StatsInputError, match=match):
            mde80(*args)
    with pytest.raises(StatsInputError, match="alpha"):
        mde80(0.03, 10, 0.25, alpha=1.5)


def test_split_seed_variance_recovers_simulated_components() -> None:
    rng = np.random.default_rng(2)
    var_split, var_seed = 4e-4, 9e-4
    seeds = rng.integers(1, 5, size=2000)  # unbalanced: 1 to 4 seeds per split
    split = np.repeat(np.arange(seeds.size), seeds)
    delta = (0.01 + math.sqrt(var_split) * rng.standard_normal(seeds.size)[split]
             + math.sqrt(var_seed) * rng.standard_normal(split.size))
    est = split_seed_variance(pd.DataFrame({"split": split, "delta": delta}))
    assert est.var_seed == pytest.approx(var_seed, rel=0.1)  # ~4 SEs
    assert est.var_split == pytest.approx(var_split, rel=0.15)  # ~3 SEs
    assert VarianceComponents(var_split, var_seed).sd(3) == pytest.approx(math.sqrt(4e-4 + 3e-4))


def test_split_seed_variance_edge_cases() -> None:
    one_seed = pd.DataFrame({"split": [0, 1, 2], "delta": [0.01, 0.02, 0.04]})
    assert all(math.isnan(v) for v in (split_seed_variance(one_seed).var_split, split_seed_variance(one_seed).var_seed))
    # Split means closer together than seed noise explains: var_split truncated at 0.
    flat = pd.DataFrame({"split": [0, 0, 1, 1], "delta": [0.0, 0.04, 0.01, 0.03]})
    est = split_seed_variance(flat)
    assert est.var_split == 0.0
    assert est.var_seed == pytest.approx((2 * 4e-4 + 2 * 1e-4) / 2)
    with pytest.raises(StatsInputError, match="lacks column"):
        split_seed_variance(flat.rename(columns={"delta": "d"}))
    with pytest.raises(StatsInputError, match="at least 2 splits"):
        split_seed_variance(flat[flat["split"] == 0])


def test_cross_dataset_caveat_marks_fixed_test_sets() -> None:
    assert cross_dataset_caveat("LIVE", "LIVE") is None
    caveat = cross_dataset_caveat("KonIQ-10k", "SPAQ")
    assert caveat.startswith("cross-dataset cell (trained on KonIQ-10k, tested on all of SPAQ in every split)")
    assert "descriptive only" in caveat and "Holm" in caveat


def test_wilcoxon_known_values() -> None:
    # Exact two-sided p = 2 * (#sign patterns at least as extreme) / 2**n.
    assert wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert wilcoxon_p([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)
    # W- = 2: rank subsets with sum <= 2 are {}, {1}, {2} -> p = 2 * 3 / 64.
    assert wilcoxon_p([1, -2, 3, 4, 5, 6]) == pytest.approx(6 / 64)
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0


def test_across_dataset_wilcoxon_caveat_threshold() -> None:
    p5, caveat5 = across_dataset_wilcoxon([0.01, 0.02, 0.03, 0.04, 0.05])
    assert p5 == pytest.approx(0.0625)
    assert caveat5 is not None
    assert "N = 5 < 6" in caveat5 and "cannot reach p < .05" in caveat5 and "0.0625" in caveat5
    names = ["LIVE", "CSIQ", "TID2013", "KADID-10k", "KonIQ-10k", "SPAQ"]
    p6, caveat6 = across_dataset_wilcoxon(dict(zip(names, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], strict=True)))
    assert p6 == pytest.approx(0.03125)
    assert caveat6 is None
    # A zero difference is dropped by the test, so six datasets with one tie behave like five.
    p_tie, caveat_tie = across_dataset_wilcoxon(pd.Series([0.0, 0.02, 0.03, 0.04, 0.05, 0.06]))
    assert p_tie == pytest.approx(0.0625)
    assert caveat_tie is not None and "N = 5" in caveat_tie


def test_holm_hand_example_and_statsmodels() -> None:
    # Sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, size=17)
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert gc.get_freeze_count() == 0  # the gc.freeze() around statsmodels is undone


def test_holm_nan_safe() -> None:
    out = holm([0.01, float("nan"), 0.04, 0.03])
    assert math.isnan(out[1])
    assert out[[0, 2, 3]] == pytest.approx([0.03, 0.06, 0.06])  # family of 3, not 4
    assert np.isnan(holm([float("nan"), float("nan")])).all()
    with pytest.raises(StatsInputError, match=r"\[0, 1\]"):
        holm([0.5, 1.2])


def _population_srcc(noise_sd: float) -> float:
    # Bivariate normal with correlation r has Spearman correlation (6 / pi) * asin(r / 2).
    r = 1.0 / math.sqrt(1.0 + noise_sd**2)
    return 6.0 / math.pi * math.asin(r / 2.0)


def test_paired_bootstrap_ci_contains_population_difference() -> None:
    rng = np.random.default_rng(42)
    n = 600
    mos = rng.standard_normal(n)
    pred_a = mos + 0.3 * rng.standard_normal(n)
    pred_b = mos + 1.0 * rng.standard_normal(n)
    true_delta = _population_srcc(0.3) - _population_srcc(1.0)  # about 0.25
    for method in ("BCa", "percentile"):
        low, high = paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=1000, seed=0, method=method)
        assert low < true_delta < high, method
        assert low > 0.0, method
        assert high - low < 0.15, method
    # Same seed, same interval; swapping the heads mirrors it.
    low, high = paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=1000, seed=0, method="percentile")
    assert (low, high) == paired_bootstrap_srcc_ci(mos, pred_a, pred_b, 1000, seed=0, method="percentile")
    low_s, high_s = paired_bootstrap_srcc_ci(mos, pred_b, pred_a, 1000, seed=0, method="percentile")
    assert (low_s, high_s) == pytest.approx((-high, -low))


def test_paired_bootstrap_degenerate_cases() -> None:
    mos = np.arange(10.0)
    pred = np.array([0.0, 2, 1, 3, 5, 4, 6, 8, 7, 9])
    assert paired_bootstrap_srcc_ci(mos, pred, 2.0 * pred + 1.0) == (0.0, 0.0)  # same ranks
    low, high = paired_bootstrap_srcc_ci(mos, pred, np.ones(10))
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(StatsInputError, match="equal length"):
        paired_bootstrap_srcc_ci(mos, pred, pred[:5])


def test_multi_pair_bootstrap_equals_per_pair_and_rankdata_reference() -> None:
    rng = np.random.default_rng(5)
    n = 40
    mos = rng.integers(1, 6, n).astype(float)  # heavy ties: 5 distinct MOS values
    preds = {"a": mos + rng.integers(0, 3, n), "b": rng.integers(0, 4, n) + mos / 2, "c": rng.standard_normal(n)}
    pairs = [("a", "b"), ("a", "c"), ("c", "b")]
    cis = paired_bootstrap_srcc_cis(mos, preds, pairs, n_resamples=300, seed=1)
    assert list(cis) == pairs
    for a, b in pairs:
        assert cis[(a, b)] == paired_bootstrap_srcc_ci(mos, preds[a], preds[b], n_resamples=300, seed=1)

    def rankdata_delta(m, x, y, axis=-1):  # the textbook statistic: scipy average ranks of each resample
        return rowwise_srcc(m, x) - rowwise_srcc(m, y)

    ref = sps.bootstrap((mos, preds["a"], preds["b"]), rankdata_delta, paired=True, vectorized=True,
                        n_resamples=300, rng=np.random.default_rng(1)).confidence_interval
    assert cis[("a", "b")] == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_multi_pair_bootstrap_degenerate_pairs_and_unknown_heads() -> None:
    mos = np.arange(8.0)
    preds = {"a": np.array([0.0, 2, 1, 3, 5, 4, 7, 6]), "const": np.full(8, 2.0)}
    preds["a2"] = preds["a"] ** 3  # same ranks as a
    cis = paired_bootstrap_srcc_cis(mos, preds, [("a", "a2"), ("a", "const")])
    assert cis[("a", "a2")] == (0.0, 0.0)
    assert np.isnan(cis[("a", "const")]).all()
    assert all(np.isnan(ci).all() for ci in paired_bootstrap_srcc_cis(np.ones(8), preds, [("a", "a2")]).values())
    with pytest.raises(StatsInputError, match=r"without predictions: \['b'\]"):
        paired_bootstrap_srcc_cis(mos, preds, [("a", "b")])


def test_group_bootstrap_with_singleton_groups_is_the_image_bootstrap() -> None:
    rng = np.random.default_rng(8)
    mos = rng.integers(1, 6, 60).astype(float)
    pred_a, pred_b = mos + rng.standard_normal(60), mos + 2 * rng.standard_normal(60)
    labels = [f"img{1000 - i}" for i in range(60)]  # any labels: groups are numbered by first appearance
    for method in ("BCa", "percentile"):
        image = paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=400, seed=3, method=method)
        assert paired_bootstrap_srcc_ci(mos, pred_a, pred_b, 400, seed=3, method=method, groups=labels) == image


def test_group_bootstrap_matches_expanded_resamples_reference() -> None:
    # Reference: scipy's bootstrap over group indices, each resample built by concatenating the drawn
    # groups' images (a group drawn twice appears twice) and ranked by rowwise_srcc (scipy rankdata).
    rng = np.random.default_rng(4)
    sizes = [3, 5, 4, 6, 2, 5, 4, 3]
    ref = np.repeat(np.arange(len(sizes)), sizes)
    mos = rng.integers(1, 5, ref.size).astype(float)  # ties
    pred_a = mos + rng.standard_normal(len(sizes))[ref] + 0.5 * rng.standard_normal(ref.size)
    pred_b = np.round(mos + rng.standard_normal(ref.size), 1)
    members = [np.flatnonzero(ref == g) for g in range(len(sizes))]

    def expanded_delta(groups_drawn):
        rows = np.concatenate([members[g] for g in groups_drawn])
        return float(rowwise_srcc(mos[rows], pred_a[rows]) - rowwise_srcc(mos[rows], pred_b[rows]))

    for method in ("percentile", "BCa"):
        ref_ci = sps.bootstrap((np.arange(len(sizes)),), expanded_delta, vectorized=False, n_resamples=300,
                               method=method, rng=np.random.default_rng(2)).confidence_interval
        ci = paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=300, seed=2, method=method, groups=ref)
        assert ci == pytest.approx((ref_ci.low, ref_ci.high), rel=1e-12), method


def test_group_bootstrap_two_groups_known_interval() -> None:
    # Two groups: a resample is {1, 1}, {1, 2} or {2, 2} with probabilities 1/4, 1/2, 1/4. A group drawn twice
    # has the SRCCs of that group alone (duplicating every image keeps Spearman's rho), so the 95 % percentile
    # interval runs exactly from one group's delta to the other's.
    mos = np.arange(10.0)
    pred_a = np.array([0, 1, 2, 4, 3, 5, 6, 7, 8, 9.0])
    pred_b = np.array([1, 0, 3, 2, 4, 9, 8, 7, 6, 5.0])
    ref = np.repeat(["left", "right"], 5)
    d_left = sps.spearmanr(mos[:5], pred_a[:5]).statistic - sps.spearmanr(mos[:5], pred_b[:5]).statistic  # 0.9 - 0.8
    d_right = sps.spearmanr(mos[5:], pred_a[5:]).statistic - sps.spearmanr(mos[5:], pred_b[5:]).statistic  # 1-(-1)
    assert (d_left, d_right) == pytest.approx((0.1, 2.0))
    low, high = paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=2000, method="percentile", groups=ref)
    assert (low, high) == pytest.approx((0.1, 2.0), abs=1e-12)


def test_group_bootstrap_wider_on_clustered_data() -> None:
    # 12 references x 40 images; each head has its own error per reference (content it misjudges), so the
    # SRCC difference depends on which references are drawn: resampling images ignores that.
    rng = np.random.default_rng(6)
    ref = np.repeat(np.arange(12), 40)
    mos = rng.normal(0, 0.7, 12)[ref] + rng.standard_normal(ref.size)
    pred_a = mos + rng.normal(0, 0.6, 12)[ref] + 0.4 * rng.standard_normal(ref.size)
    pred_b = mos + rng.normal(0, 0.6, 12)[ref] + 0.6 * rng.standard_normal(ref.size)
    image_low, image_high = paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=1000, method="percentile")
    low, high = paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=1000, method="percentile", groups=ref)
    assert (round(image_high - image_low, 3), round(high - low, 3)) == (0.063, 0.133)
    assert high - low > 2 * (image_high - image_low)
    # Resampling groups, the default interval is the percentile one (BCa stays the default for images).
    assert paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=1000, groups=ref) == (low, high)
    assert paired_bootstrap_srcc_ci(mos, pred_a, pred_b, n_resamples=1000) == paired_bootstrap_srcc_ci(
        mos, pred_a, pred_b, n_resamples=1000, method="BCa")


def test_group_bootstrap_rejects_bad_groups() -> None:
    mos, pred = np.arange(6.0), np.array([0, 2, 1, 3, 5, 4.0])
    with pytest.raises(StatsInputError, match=r"one label per test image \(6\)"):
        paired_bootstrap_srcc_ci(mos, pred, -pred, groups=[0, 0, 1])
    with pytest.raises(StatsInputError, match="missing label"):
        paired_bootstrap_srcc_ci(mos, pred, -pred, groups=["a", "a", None, "b", "b", "b"])
    with pytest.raises(StatsInputError, match="at least 2 groups"):
        paired_bootstrap_srcc_ci(mos, pred, -pred, groups=["a"] * 6)


def test_rowwise_srcc_matches_spearmanr_with_ties() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, size=(4, 30)).astype(float)
    b = a + rng.integers(0, 3, size=(4, 30))
    expected = [sps.spearmanr(a[i], b[i]).statistic for i in range(4)]
    assert rowwise_srcc(a, b) == pytest.approx(expected, rel=1e-12)


def _ordered_scores() -> pd.DataFrame:
    # Four blocks; head C always best, B second, A worst.
    return pd.DataFrame(
        {"A": [0.70, 0.80, 0.60, 0.75], "B": [0.72, 0.85, 0.65, 0.80], "C": [0.74, 0.90, 0.70, 0.85]},
        index=["LIVE", "CSIQ", "TID2013", "KADID-10k"],
    )


DATASETS = ["LIVE", "CSIQ", "TID2013", "KADID-10k", "KonIQ-10k", "SPAQ", "PIPAL", "FLIVE", "BID", "CID2013"]


def _run_table() -> pd.DataFrame:
    # 10 datasets x 2 splits x 2 seeds x 3 heads; within a (dataset, split, seed) dor > coral > mse.
    rows = []
    for b, dataset in enumerate(DATASETS):
        for split in (0, 1):
            for seed in (0, 1):
                base = 0.6 + 0.05 * b + 0.02 * split + 0.01 * seed
                rows += [("r50", dataset, split, seed, head, base + bonus)
                         for head, bonus in (("mse", 0.0), ("coral", 0.01), ("dor", 0.03))]
    return pd.DataFrame(rows, columns=["backbone", "dataset", "split", "seed", "head", "test_srcc"])


def test_independent_blocks_average_seeds_then_splits() -> None:
    scores, note = independent_blocks(_run_table(), "test_srcc")
    assert note is None
    assert scores.shape == (10, 3)
    # LIVE: seeds average to 0.605 (split 0) and 0.625 (split 1) -> 0.615 for mse.
    assert scores.loc[("r50", "LIVE")].to_dict() == pytest.approx({"coral": 0.625, "dor": 0.645, "mse": 0.615})
    assert scores.loc[("r50", "KonIQ-10k"), "mse"] == pytest.approx(0.815)
    assert average_ranks(scores).to_dict() == {"dor": 1.0, "coral": 2.0, "mse": 3.0}
    assert friedman_test(scores)[0] == pytest.approx(20.0)  # 10 blocks, same order: chi2 = N (k - 1)


def test_independent_blocks_drop_incomplete_runs_with_a_note() -> None:
    runs = _run_table()
    # dor fails on LIVE split 1 seed 0: that run is left out for every head, so LIVE averages split 0
    # (0.605) with split 1 seed 1 only (0.630) for mse.
    runs = runs[~((runs["dataset"] == "LIVE") & (runs["split"] == 1) & (runs["seed"] == 0) & (runs["head"] == "dor"))]
    scores, note = independent_blocks(runs, "test_srcc")
    assert scores.loc[("r50", "LIVE"), "mse"] == pytest.approx((0.605 + 0.63) / 2)
    assert note == "1 (block, split, seed) run(s) left out: not every head has a value"


def test_independent_blocks_refuse_too_few_blocks_or_heads() -> None:
    runs = _run_table()
    scores, reason = independent_blocks(runs[runs["dataset"] != "LIVE"], "test_srcc")
    assert scores is None
    assert reason.startswith("only 9 complete (backbone, dataset) block(s)") and "at least 10" in reason
    scores, reason = independent_blocks(runs[runs["head"] != "coral"], "test_srcc")
    assert scores is None and reason.startswith("only 2 head(s)")
    no_dor_on_live = runs[~((runs["dataset"] == "LIVE") & (runs["head"] == "dor"))]
    scores, reason = independent_blocks(no_dor_on_live, "test_srcc")
    assert scores is None and "[('r50', 'LIVE')] left out: no run with every head" in reason
    with pytest.raises(StatsInputError, match="repeat a"):
        independent_blocks(pd.concat([runs, runs.assign(test_dataset="x")]), "test_srcc")
    with pytest.raises(StatsInputError, match=r"lacks column\(s\) \['seed'\]"):
        independent_blocks(runs.drop(columns="seed"), "test_srcc")


def test_friedman_hand_computed() -> None:
    # Rank sums 4, 8, 12: chi2 = 12 / (N k (k+1)) * sum R^2 - 3 N (k+1) = 0.25 * 224 - 48 = 8.
    stat, p = friedman_test(_ordered_scores())
    assert stat == pytest.approx(8.0)
    assert p == pytest.approx(math.exp(-4.0))  # chi2 survival with 2 df is exp(-x / 2)
    with pytest.raises(StatsInputError, match="at least 3 heads"):
        friedman_test(_ordered_scores()[["A", "B"]])


def test_average_ranks() -> None:
    ranks = average_ranks(_ordered_scores())
    assert ranks.to_dict() == {"C": 1.0, "B": 2.0, "A": 3.0}
    assert list(ranks.index) == ["C", "B", "A"]
    assert average_ranks(_ordered_scores(), higher_is_better=False).to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    tied = pd.DataFrame({"A": [0.5, 0.9], "B": [0.5, 0.8]})
    assert average_ranks(tied).to_dict() == {"A": 1.25, "B": 1.75}
    with pytest.raises(StatsInputError, match="NaN"):
        average_ranks(pd.DataFrame({"A": [0.5, np.nan], "B": [0.5, 0.8]}))


def test_nemenyi_critical_difference_matches_demsar_table() -> None:
    # Demsar (2006), Table 5a: q_0.05 = 2.343 (k=3), 2.569 (k=4), 2.728 (k=5).
    for k, q in ((3, 2.343), (4, 2.569), (5, 2.728)):
        cd = nemenyi_critical_difference(k, n_blocks=10)
        assert cd == pytest.approx(q * math.sqrt(k * (k + 1) / 60.0), abs=2e-3)
    with pytest.raises(StatsInputError, match=">= 3 heads"):
        nemenyi_critical_difference(2, 10)


def test_write_provenance_fields(tmp_path) -> None:
    out = tmp_path / "res"
    path = provenance.write_provenance(
        out, ["dor-bench", "report", "--out", "a b"], duration_s=np.float64(1.5), n_runs=np.int64(40)
    )
    assert path == out / "provenance.json"
    record = json.loads(path.read_text())
    assert record["command"] == "dor-bench report --out 'a b'"
    assert record["argv"] == ["dor-bench", "report", "--out", "a b"]
    assert record["duration_s"] == 1.5 and record["n_runs"] == 40
    assert record["git_sha"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", record["git_sha"])
    date = datetime.fromisoformat(record["date"])
    assert date.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - date).total_seconds()) < 600
    machine = record["machine"]
    assert machine["cpu_count"] == os.cpu_count()
    assert machine["packages"]["torch"] == torch.__version__.split("+")[0]
    assert machine["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    assert machine["platform"]


def test_write_provenance_outside_git_and_reserved_keys(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(provenance, "_REPO_DIR", tmp_path)
    provenance.git_sha.cache_clear()  # an earlier test of this process may have asked the real checkout
    try:
        record = json.loads(provenance.write_provenance(tmp_path, "python x.py").read_text())
    finally:
        provenance.git_sha.cache_clear()
    assert record["git_sha"] == "unknown"
    assert record["command"] == "python x.py" and record["argv"] is None
    with pytest.raises(ValueError, match="reserved"):
        provenance.write_provenance(tmp_path, "x", date="yesterday")
