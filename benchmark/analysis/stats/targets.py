"""What a comparison's test speaks for: the dataset's own answer, and the extrapolation beyond it.

Every comparison of two heads is tested for two targets (the ``target`` column of ``stats.csv``):

* ``dataset`` (primary) — "the mean advantage of A over B over random splits of this dataset", the claim
  an IQA paper makes per dataset. Given the dataset, random splits are independent draws, so the per-split
  mean differences ``m_j`` (seeds averaged within a split) are i.i.d.: the paired t-test on them
  (``t = m̄ / (s_m / √J)``, ``J − 1`` df) is exact under normality, and needs no assumption about how the
  splits' overlapping training sets correlate. Its Bayesian twin (flat prior on the mean, Jeffreys on the
  variance) is the posterior ``Student-t(J − 1, m̄, s_m / √J)``, whose central interval equals the
  confidence interval. :func:`dataset_target_test`.
* ``population`` — extrapolating from this dataset to new data of its kind. The splits' training sets
  overlap, so their effects correlate (Nadeau & Bengio); the variance-components test
  (:func:`~benchmark.analysis.stats.components.variance_components_test`) inflates the split part by an
  ASSUMED ``r`` (``n_test / n_train`` by default), which one dataset cannot measure. So the population row
  carries its break-even ``r*`` (:func:`break_even_r`): the largest ``r`` at which its significance, and
  separately its verdict, still hold. Generalising beyond a dataset is what several datasets as units do
  (the across-dataset test).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from benchmark.analysis.stats._inputs import StatsInputError, check_open_unit, finite_vector
from benchmark.analysis.stats.bayes import DEFAULT_ROPE, correlated_posterior, verdict
from benchmark.analysis.stats.components import MIN_SEED_DF, split_seed_moments, vc_p_at, vc_posterior
from benchmark.analysis.stats.frequentist import corrected_ttest, wilcoxon_p
from benchmark.analysis.stats.power import mde80
from benchmark.schema import COLUMNS

DATASET = "dataset"
POPULATION = "population"
TARGETS = (DATASET, POPULATION)
DATASET_TEST = "paired-t"
"""``test`` name of the dataset target's test: the paired t-test on the split means."""
MDE_RANGE = 0.90
"""Coverage of the MDE80's sampling range (from the chi-square interval of the split means' SD)."""
R_MAX = 100.0
"""Largest ``r`` a break-even search looks at; a conclusion still holding there is reported as ``inf``."""


@dataclass(frozen=True)
class DatasetTargetTest:
    """The dataset target's test of one comparison (:func:`dataset_target_test`).

    Attributes
    ----------
    n_splits : int
        ``J``.
    mean, sd : float
        ``m̄`` and ``s_m`` (ddof 1) of the split means.
    se_mean, df, t, p : float
        ``s_m / √J``, ``J − 1``, the statistic and its two-sided p-value.
    ci_low, ci_high : float
        The ``1 − alpha`` interval (also the posterior's central credible interval).
    p_below, p_rope, p_above : float
        Posterior ``P(Δ < −rope)``, ``P(|Δ| <= rope)``, ``P(Δ > rope)``.
    verdict : str
        :func:`~benchmark.analysis.stats.bayes.verdict` of those.
    p_wilcoxon : float
        Wilcoxon signed-rank test of the split means (valid for this target too, if they are symmetric).
    """

    n_splits: int
    mean: float
    sd: float
    se_mean: float
    df: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    p_below: float
    p_rope: float
    p_above: float
    verdict: str
    p_wilcoxon: float


def dataset_target_test(split_means: ArrayLike, rope: float = DEFAULT_ROPE, alpha: float = 0.05,
                        threshold: float = 0.95) -> DatasetTargetTest:
    """Paired t-test and posterior of the per-split mean differences, for the dataset target.

    Parameters
    ----------
    split_means : array_like
        ``m_j``: per split, the mean over its seeds of head A's metric minus head B's (``J >= 2``).
    rope : float
        Half-width of the region of practical equivalence.
    alpha : float
        Level of the test and the interval.
    threshold : float
        Posterior probability a verdict needs.

    Examples
    --------
    >>> res = dataset_target_test([0.02, 0.03, 0.025, 0.035, 0.03], rope=0.01)
    >>> round(res.se_mean, 5), round(res.t, 3), res.df, round(res.p, 5)  # scipy.stats.ttest_1samp
    (0.00255, 10.983, 4.0, 0.00039)
    >>> [round(x, 4) for x in (res.ci_low, res.ci_high)], res.verdict, round(res.p_above, 4)  # 1 - t4.cdf(-7.06)
    ([0.0209, 0.0351], 'a better', 0.9989)
    """
    d = finite_vector(split_means, min_len=2)
    check_open_unit(alpha, "alpha")
    if not (math.isfinite(rope) and rope >= 0.0):
        raise StatsInputError(f"rope must be a finite value >= 0 (a half-width in metric units), got {rope}.")
    j, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    df, se = float(j - 1), sd / math.sqrt(j)
    if se == 0.0:  # every split gave the same difference: a point mass
        t, p, ci = (0.0 if mean == 0.0 else math.copysign(math.inf, mean)), float(mean == 0.0), (mean, mean)
        probs = (float(mean < -rope), float(abs(mean) <= rope), float(mean > rope))
    else:
        result = stats.ttest_1samp(d, 0.0)
        t, p, interval = float(result.statistic), float(result.pvalue), result.confidence_interval(1.0 - alpha)
        ci = (float(interval.low), float(interval.high))
        posterior = stats.t(df=df, loc=mean, scale=se)
        below, above = float(posterior.cdf(-rope)), float(posterior.sf(rope))
        probs = (below, max(0.0, 1.0 - below - above), above)
    return DatasetTargetTest(
        n_splits=j, mean=mean, sd=sd, se_mean=se, df=df, t=t, p=p, ci_low=ci[0], ci_high=ci[1],
        p_below=probs[0], p_rope=probs[1], p_above=probs[2], verdict=verdict(*probs, threshold=threshold),
        p_wilcoxon=wilcoxon_p(d))


def dataset_mde80(sd: float, n_splits: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """``(MDE80, low, high)`` of the dataset test: the smallest true mean difference the paired t-test on
    ``n_splits`` split means with SD ``sd`` detects with 80 % power (:func:`~benchmark.analysis.stats.power.mde80`
    with no overlap term), and its :data:`MDE_RANGE` sampling range — ``sd`` is an estimate, and the MDE
    scales with it: its chi-square interval (``×0.73-1.64`` at J = 10) carries over.

    Examples
    --------
    >>> # noncentral t at 4 df: 80 % power at 3.76 SE; s_m's 90 % range x0.649 (chi2 9.49) to x2.37 (chi2 0.711)
    >>> [round(x, 5) for x in dataset_mde80(0.0057009, 5)]
    [0.00959, 0.00623, 0.02275]
    """
    df = n_splits - 1
    tail = (1.0 - MDE_RANGE) / 2.0
    low, high = (sd * math.sqrt(df / stats.chi2.ppf(q, df)) for q in (1.0 - tail, tail))
    return mde80(sd, n_splits, 0.0, alpha), mde80(low, n_splits, 0.0, alpha), mde80(high, n_splits, 0.0, alpha)


def break_even_r(holds: Callable[[float], bool], r_assumed: float, r_max: float = R_MAX,
                 rel_tol: float = 1e-3) -> float:
    """The largest ``r >= r_assumed`` at which a conclusion that holds at ``r_assumed`` still holds.

    ``holds(r)`` says whether the conclusion (a test's significance, or its verdict) is the one reached at
    ``r_assumed``; a larger ``r`` widens the population test's interval, so the conclusion flips at most
    once. Bisection on ``log r`` to ``rel_tol`` (hand-written: the search is over one bounded monotone
    step, which a bracketed root finder needs a continuous function for).

    Returns
    -------
    float
        ``inf`` when it still holds at ``r_max``; NaN when it does not hold at ``r_assumed``.

    Examples
    --------
    >>> round(break_even_r(lambda r: 0.05 / (1 / 10 + r) ** 0.5 > 0.1, 0.3), 3)  # flips at r = 0.15
    nan
    >>> round(break_even_r(lambda r: 0.05 / (1 / 10 + r) ** 0.5 > 0.05, 0.3), 2)  # flips at r = 0.9
    0.9
    >>> break_even_r(lambda r: True, 0.3)
    inf
    """
    if not holds(r_assumed):
        return math.nan
    if holds(r_max):
        return math.inf
    low, high = math.log(max(r_assumed, 1e-9)), math.log(r_max)
    while high - low > rel_tol:
        middle = (low + high) / 2.0
        low, high = (middle, high) if holds(math.exp(middle)) else (low, middle)
    return float(np.exp(low))


def population_break_even(runs: pd.DataFrame, r: float, rope: float = DEFAULT_ROPE, alpha: float = 0.05,
                          threshold: float = 0.95, split: str = COLUMNS.split, value: str = "delta") -> tuple[float, float]:
    """``(r*_significance, r*_verdict)`` of the population test of one comparison assumed at ``r``.

    The test is the one :func:`~benchmark.analysis.stats.components.variance_components_test` runs on these
    runs: the VC test with its worst-share (J < 30) or Satterthwaite p-value and the VC posterior, or, with
    fewer than :data:`~benchmark.analysis.stats.components.MIN_SEED_DF` seed df, the corrected test and the
    correlated Bayesian t-test of the split means. The r* of significance is :func:`break_even_r` of
    "significant at ``alpha``" (NaN when it is not significant at ``r``: a larger r only widens the interval),
    the r* of the verdict that of "the same verdict as at ``r``" (an undecided verdict stays undecided:
    ``inf``). ``inf``: the conclusion never flips.
    """
    m = split_seed_moments(runs, split, value)
    if m.seed_df >= MIN_SEED_DF:
        def p_at(ratio: float) -> float:
            return vc_p_at(m, ratio)

        def verdict_at(ratio: float) -> str:
            if float(m.variance_of_mean(ratio)) == 0.0:
                mean = float(m.mean)
                return verdict(float(mean < -rope), float(abs(mean) <= rope), float(mean > rope), threshold)
            return verdict(*vc_posterior(m, ratio).rope(rope), threshold=threshold)
    else:
        means = runs.groupby(split, sort=False)[value].mean().to_numpy()

        def p_at(ratio: float) -> float:
            return corrected_ttest(means, ratio)[1]

        def verdict_at(ratio: float) -> str:
            return verdict(*correlated_posterior(means, ratio, rope), threshold=threshold)

    reached = verdict_at(r)
    return (break_even_r(lambda ratio: p_at(ratio) < alpha, r),
            break_even_r(lambda ratio: verdict_at(ratio) == reached, r))


__all__ = ["DATASET", "DATASET_TEST", "MDE_RANGE", "POPULATION", "R_MAX", "TARGETS", "DatasetTargetTest",
           "break_even_r", "dataset_mde80", "dataset_target_test", "population_break_even"]
