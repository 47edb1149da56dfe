"""What a test speaks for: the dataset target's paired t-test, its MDE, and the population test's break-even r*."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from benchmark.analysis.stats import (
    break_even_r,
    corrected_ttest,
    dataset_mde80,
    dataset_target_test,
    population_break_even,
    variance_components_test,
    vc_p_at,
    worst_share_p,
    worst_share_p_at,
)
from benchmark.analysis.stats.components import split_seed_moments

SPLIT_MEANS = np.array([0.031, -0.004, 0.022, 0.015, 0.040, 0.009, 0.027, -0.011, 0.018, 0.025])


def test_the_dataset_test_is_the_paired_t_test_on_the_split_means():
    res = dataset_target_test(SPLIT_MEANS, rope=0.01)
    scipy = scipy_stats.ttest_1samp(SPLIT_MEANS, 0.0)
    assert (res.t, res.p, res.df) == pytest.approx((scipy.statistic, scipy.pvalue, 9.0))
    assert res.se_mean == pytest.approx(SPLIT_MEANS.std(ddof=1) / math.sqrt(10))
    half = scipy_stats.t.ppf(0.975, 9) * res.se_mean
    assert (res.ci_low, res.ci_high) == pytest.approx((SPLIT_MEANS.mean() - half, SPLIT_MEANS.mean() + half))
    posterior = scipy_stats.t(9, loc=SPLIT_MEANS.mean(), scale=res.se_mean)  # flat prior, Jeffreys on the variance
    assert res.p_below == pytest.approx(posterior.cdf(-0.01)) and res.p_above == pytest.approx(posterior.sf(0.01))
    assert res.p_below + res.p_rope + res.p_above == pytest.approx(1.0)
    assert res.verdict == "undecided" and res.p_wilcoxon == pytest.approx(
        scipy_stats.wilcoxon(SPLIT_MEANS).pvalue)


def test_identical_split_means_are_a_point_mass():
    res = dataset_target_test([0.02] * 5, rope=0.01)
    assert (res.t, res.p, res.ci_low, res.ci_high, res.verdict) == (math.inf, 0.0, 0.02, 0.02, "a better")
    assert dataset_target_test([0.0] * 5).p == 1.0


def test_the_mde_and_its_range_scale_with_the_spread():
    mde, low, high = dataset_mde80(0.03, 10)
    assert low < mde < high
    assert (low / mde, high / mde) == pytest.approx((math.sqrt(9 / scipy_stats.chi2.ppf(0.95, 9)),
                                                     math.sqrt(9 / scipy_stats.chi2.ppf(0.05, 9))))
    # 80 % power at the MDE: the noncentral t of the paired test with 9 df
    noncentrality = mde / (0.03 / math.sqrt(10))
    critical = scipy_stats.t.ppf(0.975, 9)
    power = scipy_stats.nct.sf(critical, 9, noncentrality) + scipy_stats.nct.cdf(-critical, 9, noncentrality)
    assert power == pytest.approx(0.80, abs=1e-6)


def test_break_even_r_finds_where_a_conclusion_flips():
    assert break_even_r(lambda r: r < 0.9, 0.3) == pytest.approx(0.9, rel=2e-3)
    assert math.isnan(break_even_r(lambda r: r < 0.1, 0.3))
    assert break_even_r(lambda r: True, 0.3) == math.inf


def test_the_pointwise_worst_share_p_equals_the_tabled_one_on_its_grid():
    for r in (0.32, 1.0):
        for t in (1.5, 2.7, 4.0):
            assert worst_share_p_at(t, 10, 10, 0.5, r) == pytest.approx(worst_share_p(t, 10, 10, 0.5, r), rel=1e-9)


def _runs(rng, j=10, s=2, delta=0.03, split_sd=0.01, seed_sd=0.02):
    a = rng.normal(0, split_sd, j)
    return pd.DataFrame({"split": np.repeat(np.arange(j), s),
                         "delta": delta + np.repeat(a, s) + rng.normal(0, seed_sd, j * s)})


def test_population_r_star_is_where_the_vc_test_and_its_verdict_flip():
    runs = _runs(np.random.default_rng(1))
    res = variance_components_test(runs, 200 / 600, rope=0.01)
    r_sig, r_verdict = population_break_even(runs, 1 / 3, rope=0.01)
    m = split_seed_moments(runs)
    assert res.p < 0.05 and r_sig > 1 / 3
    assert vc_p_at(m, r_sig * 0.99) < 0.05 <= vc_p_at(m, r_sig * 1.01)  # flips at r*
    assert math.isinf(r_verdict) or r_verdict > 1 / 3
    one_seed = runs.groupby("split", as_index=False)["delta"].mean()
    r_sig, _ = population_break_even(one_seed, 1 / 3, rope=0.01)
    means = one_seed["delta"].to_numpy()
    if corrected_ttest(means, 1 / 3)[1] < 0.05:  # the corrected test's r* with one seed
        assert corrected_ttest(means, r_sig * 0.99)[1] < 0.05 <= corrected_ttest(means, r_sig * 1.01)[1]


def test_a_non_significant_population_test_has_no_significance_to_break():
    runs = _runs(np.random.default_rng(2), delta=0.0)
    assert variance_components_test(runs, 200 / 600).p > 0.05
    r_sig, r_verdict = population_break_even(runs, 1 / 3, rope=0.01)
    assert math.isnan(r_sig) and r_verdict == math.inf  # undecided stays undecided whatever r
