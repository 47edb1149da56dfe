"""Tests of the variance-components (VC) test and its power: hand-computed tables, Monte Carlo references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark.analysis.stats import (
    FALLBACK_TEST,
    VC_SATTERTHWAITE,
    VC_WORST_SHARE,
    SplitSeedMoments,
    StatsInputError,
    VarianceComponents,
    balanced_moments,
    bayesian_correlated_ttest,
    corrected_resampled_ci,
    corrected_resampled_ttest,
    design_table,
    mde80,
    rejection_rate,
    split_seed_moments,
    split_seed_variance,
    uses_vc_test,
    variance_components_test,
    vc_mde80,
    vc_posterior,
    vc_power,
    vc_ttest,
    worst_share_critical,
    worst_share_p,
)
from benchmark.analysis.stats.components import SHARES

R = 1 / 3  # n_test / n_train of the tables below (n_train = 600, n_test = 200)


def _table(values: dict[int, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([(split, d) for split, ds in values.items() for d in ds], columns=["split", "delta"])


# Balanced, J = 4 x S = 2. Split means 0.02, 0.04, 0.00, 0.06: mean 0.03, s²_m = (1 + 1 + 9 + 9)e-4 / 3.
# Within: (0.01² + 0.01²) per split -> 8e-4 over nu = 4 -> MSW = 2e-4; h = 1/2.
BALANCED = _table({0: [0.01, 0.03], 1: [0.05, 0.03], 2: [-0.01, 0.01], 3: [0.07, 0.05]})
# Unbalanced, S_j = 1, 2, 3: split means 0.02, 0.04, 0.00 (mean 0.02, s²_m = 4e-4);
# within: 0 + 2 * 0.01² + (0.01² + 0 + 0.01²) = 4e-4 over nu = 0 + 1 + 2 = 3; h = (1 + 1/2 + 1/3) / 3.
UNBALANCED = _table({0: [0.02], 1: [0.03, 0.05], 2: [-0.01, 0.0, 0.01]})
# Split means closer than the seed noise explains: means 0.02, 0.03, 0.01, 0.02 (s²_m = 2e-4 / 3) against
# h MSW = 4e-4 (within: 4 splits x 2 x 0.02² = 3.2e-3 over nu = 4 -> MSW = 8e-4).
TRUNCATED = _table({0: [0.00, 0.04], 1: [0.05, 0.01], 2: [-0.01, 0.03], 3: [0.04, 0.00]})


def test_moments_and_variance_of_mean_balanced() -> None:
    m = split_seed_moments(BALANCED)
    assert (m.n_splits, m.seed_df, m.h) == (4, 4, 0.5)
    assert (m.mean, m.var_means, m.msw) == pytest.approx((0.03, 20e-4 / 3, 2e-4))
    assert m.var_split == pytest.approx(20e-4 / 3 - 1e-4)
    # V̂ = σ̂²_a (1/J + r) + h MSW / J, and equivalently (1/J + r) s²_m - h r MSW when σ̂²_a > 0.
    v = m.variance_of_mean(R)
    assert v == pytest.approx((20e-4 / 3 - 1e-4) * (1 / 4 + R) + 0.5 * 2e-4 / 4)
    assert v == pytest.approx((1 / 4 + R) * 20e-4 / 3 - 0.5 * R * 2e-4)
    # The array version of the same balanced table agrees.
    b = balanced_moments([[0.01, 0.03], [0.05, 0.03], [-0.01, 0.01], [0.07, 0.05]])
    assert (b.mean, b.var_means, b.msw, b.seed_df, b.h) == pytest.approx((m.mean, m.var_means, m.msw, 4, 0.5))


def test_moments_unbalanced_and_truncated() -> None:
    m = split_seed_moments(UNBALANCED)
    assert (m.n_splits, m.seed_df) == (3, 3)
    assert m.h == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert (m.mean, m.var_means, m.msw) == pytest.approx((0.02, 4e-4, 4e-4 / 3))
    assert m.variance_of_mean(R) == pytest.approx((4e-4 - m.h * 4e-4 / 3) * (1 / 3 + R) + m.h * 4e-4 / 3 / 3)
    t = split_seed_moments(TRUNCATED)
    assert t.var_means == pytest.approx(2e-4 / 3) and t.msw == pytest.approx(8e-4)
    assert t.var_split == 0.0  # 2e-4 / 3 - 4e-4 < 0, truncated
    assert t.variance_of_mean(R) == pytest.approx(0.5 * 8e-4 / 4)  # seed part only
    # The components of power.split_seed_variance are the same moments.
    c = split_seed_variance(UNBALANCED)
    assert (c.var_split, c.var_seed) == pytest.approx((float(m.var_split), 4e-4 / 3))


def test_moments_reject_bad_tables() -> None:
    with pytest.raises(StatsInputError, match=r"lacks column\(s\) \['delta'\]"):
        split_seed_moments(BALANCED.rename(columns={"delta": "d"}))
    with pytest.raises(StatsInputError, match="NaN/inf value.*split 1"):
        split_seed_moments(BALANCED.assign(delta=BALANCED["delta"].where(BALANCED.index != 2)))
    with pytest.raises(StatsInputError, match="at least 2 splits"):
        split_seed_moments(BALANCED[BALANCED["split"] == 0])
    with pytest.raises(StatsInputError, match=r"shape \(\.\.\., J >= 2, S >= 1\)"):
        balanced_moments([0.1, 0.2])


def test_vc_ttest_satterthwaite_by_hand() -> None:
    # J = 30, S = 2: s²_m = 4e-4, MSW = 2e-4 -> σ̂²_a = 3e-4; c1 = 1/30 + 1/3.
    m = SplitSeedMoments(mean=0.02, var_means=4e-4, msw=2e-4, n_splits=30, seed_df=30, h=0.5)
    res = vc_ttest(m, R)
    c1 = 1 / 30 + R
    v = 3e-4 * c1 + 0.5 * 2e-4 / 30
    df = v**2 / ((c1 * 4e-4) ** 2 / 29 + (0.5 * R * 2e-4) ** 2 / 30)
    assert (res.se, res.t, res.df) == pytest.approx((math.sqrt(v), 0.02 / math.sqrt(v), df), rel=1e-12)
    assert res.p == pytest.approx(2 * sps.t.sf(0.02 / math.sqrt(v), df), rel=1e-10)
    assert res.critical == pytest.approx(sps.t.ppf(0.975, df)) and res.test == VC_SATTERTHWAITE
    # Truncated σ̂²_a: V̂ = h MSW / J with nu df, capped at J - 1.
    flat = vc_ttest(SplitSeedMoments(0.01, 1e-4, 4e-4, n_splits=30, seed_df=60, h=1 / 3), R)
    assert flat.se == pytest.approx(math.sqrt(4e-4 / 3 / 30)) and flat.df == 29.0
    # No seed noise: V̂ is the corrected variance and df = J - 1.
    exact = vc_ttest(SplitSeedMoments(0.01, 4e-4, 0.0, n_splits=40, seed_df=40, h=0.5), R)
    assert exact.se == pytest.approx(math.sqrt((1 / 40 + R) * 4e-4)) and exact.df == pytest.approx(39.0)


def test_vc_ttest_zero_variance_conventions() -> None:
    zero = SplitSeedMoments(mean=np.array([0.02, 0.0, -0.01]), var_means=np.zeros(3), msw=np.zeros(3),
                            n_splits=30, seed_df=30, h=0.5)
    res = vc_ttest(zero, R)
    assert res.t.tolist() == [math.inf, 0.0, -math.inf] and res.p.tolist() == [0.0, 1.0, 0.0]


def test_worst_share_rule_is_the_maximum_over_shares() -> None:
    j, nu, h, r = 10, 10, 0.5, 0.32
    c = worst_share_critical(j, nu, h, r)
    assert c == pytest.approx(2.711, abs=1e-3)  # Student's t with 9 df would use 2.262
    assert worst_share_p(c, j, nu, h, r) == pytest.approx(0.05, abs=1e-9)
    assert worst_share_p(0.0, j, nu, h, r) == pytest.approx(1.0) and worst_share_p(math.inf, j, nu, h, r) == 0.0

    def fixed(df: np.ndarray) -> np.ndarray:
        return np.full_like(df, c)

    # Direct quadrature: the level is at most 0.05 at every share, and reached near the worst one.
    rates = [rejection_rate(0.0, s, (1 - s) / h, j, nu, h, r, fixed) for s in SHARES]
    assert max(rates) == pytest.approx(0.05, abs=2e-4)
    assert SHARES[int(np.argmax(rates))] == pytest.approx(0.57, abs=0.03)
    assert rates[-1] == pytest.approx(2 * sps.t.sf(c, 9), abs=1e-4)  # no seed noise: Student's t, 9 df
    # The p-value interpolation agrees with the direct maximum at another |t|.
    direct = max(rejection_rate(0.0, s, (1 - s) / h, j, nu, h, r, lambda df: np.full_like(df, 2.0)) for s in SHARES)
    assert worst_share_p(2.0, j, nu, h, r) == pytest.approx(direct, rel=2e-3)
    res = vc_ttest(SplitSeedMoments(0.02, 4e-4, 2e-4, n_splits=j, seed_df=nu, h=h), r)
    assert res.test == VC_WORST_SHARE and res.critical == pytest.approx(c)
    assert sps.t.ppf(0.975, res.df) == pytest.approx(c)  # the reported df has the same critical value


@pytest.mark.parametrize(("n_splits", "n_seeds"), [(12, 3), (30, 2)])
def test_vc_power_matches_simulated_grids(n_splits: int, n_seeds: int) -> None:
    # The VC model with the Nadeau-Bengio correlation: a common shift of variance r var_split per grid.
    rng = np.random.default_rng(4)
    grids, r, var_split, var_seed = 100_000, 0.32, 0.002, 0.006
    components = VarianceComponents(var_split, var_seed)
    for delta in (0.0, 0.05):
        d = (delta + math.sqrt(r * var_split) * rng.standard_normal((grids, 1, 1))
             + math.sqrt(var_split) * rng.standard_normal((grids, n_splits, 1))
             + math.sqrt(var_seed) * rng.standard_normal((grids, n_splits, n_seeds)))
        simulated = np.mean(vc_ttest(balanced_moments(d), r).p < 0.05)
        exact = vc_power(delta, components, n_splits, n_seeds, r)
        assert simulated == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / grids) + 1e-3)


def _mc_posterior(m: SplitSeedMoments, r: float, draws: int, seed: int) -> np.ndarray:
    """Draws of Δ from the VC posterior by rejection sampling of the truncated scaled-inverse chi-squares."""
    rng = np.random.default_rng(seed)
    k, nu, j, h = m.n_splits - 1, m.seed_df, m.n_splits, m.h
    out = []
    total = 0
    while total < draws:
        var_m = k * m.var_means / rng.chisquare(k, draws)
        var_e = nu * m.msw / rng.chisquare(nu, draws)
        keep = var_m >= h * var_e
        v = (var_m[keep] - h * var_e[keep]) * (1 / j + r) + h * var_e[keep] / j
        out.append(m.mean + np.sqrt(v) * rng.standard_normal(v.size))
        total += v.size
    return np.concatenate(out)[:draws]


@pytest.mark.parametrize(
    ("moments", "rope"),
    [
        (SplitSeedMoments(0.02, 4e-4, 2e-4, n_splits=10, seed_df=10, h=0.5), 0.01),  # mostly split variance
        (SplitSeedMoments(0.005, 3e-4, 2e-3, n_splits=20, seed_df=20, h=0.5), 0.01),  # s²_m < h MSW: truncated
        (SplitSeedMoments(-0.01, 2e-4, 1e-4, n_splits=5, seed_df=5, h=0.5), 0.005),  # few splits, few seeds
        (SplitSeedMoments(0.01, 5e-4, 3e-4, n_splits=8, seed_df=16, h=1 / 3), 0.02),  # three seeds
    ],
)
def test_posterior_matches_monte_carlo(moments: SplitSeedMoments, rope: float) -> None:
    draws = _mc_posterior(moments, R, 2_000_000, seed=7)
    post = vc_posterior(moments, R)
    below, inside, above = post.rope(rope)
    assert below == pytest.approx(np.mean(draws < -rope), abs=1e-3)
    assert inside == pytest.approx(np.mean(np.abs(draws) <= rope), abs=1e-3)
    assert above == pytest.approx(np.mean(draws > rope), abs=1e-3)
    assert post.sf(0.0) == pytest.approx(np.mean(draws > 0), abs=1e-3)
    assert below + inside + above == pytest.approx(1.0, abs=1e-12)
    low, high = post.interval(0.95)
    assert np.mean(draws < low) == pytest.approx(0.025, abs=1e-3)
    assert np.mean(draws > high) == pytest.approx(0.025, abs=1e-3)
    assert post.cdf(low) == pytest.approx(0.025, abs=1e-9) and post.sf(high) == pytest.approx(0.025, abs=1e-9)
    assert (low + high) / 2 == pytest.approx(float(moments.mean), abs=1e-12)  # symmetric about d̄


def test_posterior_limits_and_vectorisation() -> None:
    # s²_m -> 0 (split means identical): the limit is continuous.
    m0 = SplitSeedMoments(0.01, 0.0, 2e-4, n_splits=10, seed_df=10, h=0.5)
    tiny = SplitSeedMoments(0.01, 1e-16, 2e-4, n_splits=10, seed_df=10, h=0.5)
    assert vc_posterior(m0, R).sf(0.0) == pytest.approx(vc_posterior(tiny, R).sf(0.0), abs=1e-6)
    # MSW = 0 (no seed noise): the posterior is the correlated Bayesian t-test's Student t on the split means.
    means = np.array([0.01, 0.03, 0.02, 0.04, 0.0, 0.02])
    m = SplitSeedMoments(float(means.mean()), float(means.var(ddof=1)), 0.0, n_splits=6, seed_df=6, h=0.5)
    assert vc_posterior(m, R).rope(0.01) == pytest.approx(bayesian_correlated_ttest(means, 600, 200, 0.01), abs=1e-7)
    # Arrays of grids give each grid's scalar answer.
    grids = SplitSeedMoments(np.array([0.02, -0.01]), np.array([4e-4, 1e-4]), np.array([2e-4, 5e-4]),
                             n_splits=10, seed_df=10, h=0.5)
    both = vc_posterior(grids, R).sf(0.0)
    singles = [vc_posterior(SplitSeedMoments(a, b, c, 10, 10, 0.5), R).sf(0.0)
               for a, b, c in zip(grids.mean, grids.var_means, grids.msw, strict=True)]
    assert both == pytest.approx(singles, abs=1e-14)
    with pytest.raises(StatsInputError, match="point mass"):
        vc_posterior(SplitSeedMoments(0.01, 0.0, 0.0, 10, 10, 0.5), R)
    with pytest.raises(StatsInputError, match="one grid"):
        vc_posterior(grids, R).interval()


def test_variance_components_test_vc_and_fallbacks() -> None:
    rng = np.random.default_rng(1)
    runs = pd.DataFrame({"split": np.repeat(np.arange(8), 3), "delta": 0.02 + rng.normal(0, 0.02, 24)})
    runs["delta"] += np.repeat(rng.normal(0, 0.01, 8), 3)
    res = variance_components_test(runs, 200 / 600, rope=0.01)
    m = split_seed_moments(runs)
    vc = vc_ttest(m, R)
    post = vc_posterior(m, R)
    assert res.test == VC_WORST_SHARE and res.note == "" and (res.n_splits, res.n_runs, res.seed_df) == (8, 24, 16)
    assert (res.mean, res.se_mean, res.t, res.df, res.p) == pytest.approx((m.mean, vc.se, vc.t, vc.df, vc.p))
    assert (res.ci_low, res.ci_high) == pytest.approx((m.mean - vc.critical * vc.se, m.mean + vc.critical * vc.se))
    assert (res.var_split, res.var_seed, res.r) == pytest.approx((float(m.var_split), m.msw, R))
    assert res.split_share == pytest.approx(float(m.var_split) / (float(m.var_split) + m.h * m.msw))
    assert (res.p_below, res.p_rope, res.p_above) == pytest.approx(post.rope(0.01))
    assert res.p_bayes == pytest.approx(2 * min(post.cdf(0.0), post.sf(0.0)))
    assert res.significant == (not 0.025 <= post.sf(0.0) <= 0.975)
    assert (res.cred_low, res.cred_high) == pytest.approx(post.interval(0.95))
    assert res.significant == (res.cred_low > 0 or res.cred_high < 0)

    # One seed per split: the corrected test and the correlated Bayesian t-test on the split means.
    means = runs.groupby("split", as_index=False)["delta"].mean()
    one = variance_components_test(means, 200 / 600, rope=0.01)
    d = means["delta"].to_numpy()
    assert one.test == FALLBACK_TEST and one.note.startswith("one seed per split")
    assert (one.t, one.p) == pytest.approx(corrected_resampled_ttest(d, 600, 200))
    assert (one.ci_low, one.ci_high) == pytest.approx(corrected_resampled_ci(d, 600, 200))
    assert (one.p_below, one.p_rope, one.p_above) == pytest.approx(bayesian_correlated_ttest(d, 600, 200, 0.01))
    assert one.df == 7.0 and math.isnan(one.var_split) and math.isnan(one.var_seed)
    assert one.p_bayes == one.p and one.significant == (one.p < 0.05)

    # Four seed df (< 5): the same fallback on the split means, with the components still reported.
    few = variance_components_test(BALANCED, 200 / 600)
    assert few.test == FALLBACK_TEST and "only 4 seed degree(s) of freedom" in few.note
    assert few.p == pytest.approx(corrected_resampled_ttest([0.02, 0.04, 0.0, 0.06], 600, 200)[1])
    assert few.var_split == pytest.approx(20e-4 / 3 - 1e-4) and few.var_seed == pytest.approx(2e-4)


def test_variance_components_test_degenerate_and_bad_input() -> None:
    same = pd.DataFrame({"split": np.repeat(np.arange(5), 2), "delta": 0.02})
    res = variance_components_test(same, 200 / 600, rope=0.01)
    assert (res.t, res.p, res.p_bayes, res.significant) == (math.inf, 0.0, 0.0, True)
    assert (res.p_below, res.p_rope, res.p_above, res.verdict) == (0.0, 0.0, 1.0, "a better")
    zero = variance_components_test(same.assign(delta=0.0), 200 / 600)
    assert (zero.t, zero.p, zero.p_bayes, zero.significant, zero.verdict) == (0.0, 1.0, 1.0, False, "equivalent")
    for kwargs, match in (({"r": 0}, "finite and > 0"), ({"rope": -1.0}, "rope must be"),
                          ({"alpha": 1.5}, "alpha"), ({"threshold": 0.4}, "threshold")):
        args = {"r": 200 / 600, **kwargs}
        with pytest.raises(StatsInputError, match=match):
            variance_components_test(same.assign(delta=np.arange(10) / 100), **args)


def test_vc_power_level_mde_and_floor() -> None:
    c = VarianceComponents(var_split=0.0046, var_seed=0.0069)
    mde = vc_mde80(c, 10, 2, 0.32)
    assert vc_power(mde, c, 10, 2, 0.32) == pytest.approx(0.80, abs=1e-8)
    # J < 30: the worst-share rule holds the level at every share (these components are near the worst one).
    assert vc_power(0.0, c, 10, 2, 0.32) <= 0.05 + 1e-4
    # The floor as J grows is 2.80 sqrt(r var_split) whatever S; more seeds lower the MDE at fixed J.
    floor = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * math.sqrt(0.32 * 0.0046)
    assert vc_mde80(c, 5000, 2, 0.32) == pytest.approx(floor, rel=0.01)
    assert vc_mde80(c, 5000, 5, 0.32) == pytest.approx(floor, rel=0.01)
    assert vc_mde80(c, 50, 5, 0.32) < vc_mde80(c, 50, 2, 0.32)
    with pytest.raises(StatsInputError, match="corrected test"):
        vc_power(0.1, c, 10, 1, 0.32)
    assert uses_vc_test(5, 2) and not uses_vc_test(4, 2) and not uses_vc_test(100, 1)


def test_design_table() -> None:
    c = VarianceComponents(var_split=0.0046, var_seed=0.0069)
    table = design_table(c, 0.32)
    assert list(table.columns) == ["n_splits", "n_seeds", "runs_per_head", "mde80_dataset", "test", "mde80", "floor"]
    assert table["mde80_dataset"].tolist() == pytest.approx(
        [mde80(c.sd(s), j, 0.0) for j, s in zip(table["n_splits"], table["n_seeds"], strict=True)])
    assert list(zip(table["n_splits"], table["n_seeds"], table["runs_per_head"], strict=True)) == [
        (10, 1, 10), (10, 2, 20), (20, 2, 40), (50, 2, 100), (30, 3, 90), (100, 1, 100)]
    assert table["test"].tolist() == ["corrected", "vc-worst-share", "vc-worst-share", "vc-satterthwaite",
                                      "vc-satterthwaite", "corrected"]
    one_seed = table.iloc[0]
    assert one_seed["mde80"] == pytest.approx(mde80(math.sqrt(0.0046 + 0.0069), 10, 0.32))
    assert table.iloc[1]["mde80"] == pytest.approx(vc_mde80(c, 10, 2, 0.32))
    floor = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * math.sqrt(0.32 * 0.0046)
    assert table.loc[table["test"] != "corrected", "floor"].tolist() == pytest.approx([floor] * 4)
    with pytest.raises(StatsInputError, match="finite and >= 0"):
        design_table(VarianceComponents(math.nan, 0.1), 0.32)
