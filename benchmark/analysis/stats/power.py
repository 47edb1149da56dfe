"""What a grid could have seen: power and minimum detectable effect (MDE) of the per-split tests.

* :func:`corrected_ttest_power`, :func:`mde80` — the corrected resampled t-test on per-split differences
  (seeds averaged), the test of a grid with one seed per split;
* :func:`split_seed_variance` — split-to-split and seed-to-seed variance of per-run differences;
* :func:`vc_power`, :func:`vc_mde80` — the variance-components test
  (:mod:`~benchmark.analysis.stats.components`) of a grid with ``S >= 2`` seeds per split;
* :func:`design_table` — MDE and cost of a few (splits, seeds) designs from a pilot's components, for both
  targets: "How many splits do I need?" (``dor-bench plan``).

For the corrected test the model is the one under which it is exact: per-split differences with
within-grid variance ``sigma**2`` whose mean has variance ``(1/J + n_test/n_train) * sigma**2``; the
statistic is noncentral t with ``J - 1`` df. For the VC test it is ``d_js = Δ + a_j + e_js`` with
``Var(d̄) = var_split (1/J + r) + var_seed / (J S)``: the seed noise is divided by ``J S`` and only the
split part carries ``r = n_test / n_train``, so as J grows the MDE falls to ``2.80 sqrt(r var_split)``
whatever S, while the corrected test's floor ``2.80 sqrt(r (var_split + var_seed / S))`` keeps the seed noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from benchmark.analysis.stats._inputs import StatsInputError, check_open_unit
from benchmark.analysis.stats.components import (
    FALLBACK_TEST,
    MIN_SEED_DF,
    SATTERTHWAITE_MIN_SPLITS,
    VC_SATTERTHWAITE,
    VC_WORST_SHARE,
    rejection_rate,
    split_seed_moments,
    worst_share_critical,
)
from benchmark.schema import COLUMNS

TARGET_POWER = 0.80


@dataclass(frozen=True)
class VarianceComponents:
    """Variance of per-run differences (head A minus head B) split into its two sources.

    Attributes
    ----------
    var_split : float
        Between-split variance of the true per-split difference (the split's data: which images
        train and which test); averaging seeds does not reduce it.
    var_seed : float
        Variance of one run's difference around its split's true difference (training noise: head
        initialisation, dropout); averaging ``S`` seeds divides it by ``S``.
    """

    var_split: float
    var_seed: float

    def sd(self, n_seeds: int) -> float:
        """SD of a per-split difference averaged over ``n_seeds`` seeds: ``sqrt(var_split + var_seed / S)``."""
        if n_seeds < 1:
            raise StatsInputError(f"n_seeds must be >= 1, got {n_seeds}.")
        return math.sqrt(self.var_split + self.var_seed / n_seeds)


def _check_design(sd: float, n_splits: int, test_train_ratio: float, alpha: float) -> None:
    if not (math.isfinite(sd) and sd >= 0.0):
        raise StatsInputError(f"the SD of the per-split differences must be finite and >= 0, got {sd}.")
    if n_splits < 2:
        raise StatsInputError(f"the corrected t-test needs n_splits >= 2, got {n_splits}.")
    if not (math.isfinite(test_train_ratio) and test_train_ratio >= 0.0):
        raise StatsInputError(f"test_train_ratio (n_test / n_train) must be finite and >= 0, got {test_train_ratio}.")
    check_open_unit(alpha, "alpha")


def _limit_noncentrality(alpha: float) -> float:
    """Noncentrality giving 80 % power as J grows (normal limit): ``z_{1 - alpha/2} + z_{0.80}``."""
    return float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(TARGET_POWER))


def _power_at(noncentrality: float, df: int, alpha: float) -> float:
    critical = stats.t.ppf(1.0 - alpha / 2.0, df)
    # P(T < -c) written as the upper tail at -noncentrality: scipy's nct.cdf turns NaN far in the tail.
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality))


def corrected_ttest_power(
    delta: float, sd: float, n_splits: int, test_train_ratio: float, alpha: float = 0.05
) -> float:
    """Power of the two-sided corrected resampled t-test at level ``alpha`` for a true mean difference.

    ``P(|T| > t_{1 - alpha/2, J-1})`` with ``T`` noncentral t, ``J - 1`` degrees of freedom and
    noncentrality ``delta / sqrt((1/J + test_train_ratio) * sd**2)`` (``scipy.stats.nct``).

    Parameters
    ----------
    delta : float
        True mean difference, in metric units.
    sd : float
        SD of the per-split differences within one grid (seeds averaged), ``> 0``.
    n_splits : int
        Number of splits J (>= 2).
    test_train_ratio : float
        ``n_test / n_train`` of a split (1/3 for 60/20/20 splits).
    alpha : float, default 0.05
        Two-sided level.

    Returns
    -------
    float
        Power in [alpha, 1).

    Examples
    --------
    >>> round(corrected_ttest_power(0.0, 0.03, 10, 1 / 3), 4)  # no effect: the level
    0.05
    >>> round(corrected_ttest_power(0.05, 0.03, 10, 1 / 3), 4)
    0.6169
    """
    _check_design(sd, n_splits, test_train_ratio, alpha)
    if sd == 0.0:
        raise StatsInputError("power needs sd > 0 (with no spread every non-zero difference is detected).")
    se = math.sqrt(1.0 / n_splits + test_train_ratio) * sd
    return _power_at(delta / se, n_splits - 1, alpha)


def mde80(sd: float, n_splits: int, test_train_ratio: float, alpha: float = 0.05) -> float:
    """Minimum detectable effect: the smallest true mean difference found with 80 % power.

    Solves ``corrected_ttest_power(delta, sd, J, ratio, alpha) = 0.80`` for ``delta > 0`` with
    ``scipy.optimize.brentq``. The noncentrality that gives 80 % power depends only on ``J`` and
    ``alpha``, so ``mde80 = lambda_80(J, alpha) * sqrt(1/J + n_test/n_train) * sd``.

    **A floor that more splits cannot lower.** As ``J`` grows, ``lambda_80`` falls to
    ``z_{1 - alpha/2} + z_{0.80}`` (2.80 at alpha = .05) and ``1/J`` vanishes, so
    ``mde80 -> 2.80 * sqrt(n_test/n_train) * sd``: the splits of one dataset share its images, and no
    number of re-splits of the same data removes the dataset-to-dataset variation that the
    ``n_test/n_train`` term stands for. Only less spread does: more seeds per split (see
    :class:`VarianceComponents`), larger test sets, more datasets.

    Parameters
    ----------
    sd : float
        SD of the per-split differences (seeds averaged); from a split/seed variance decomposition,
        ``VarianceComponents.sd(S) = sqrt(var_split + var_seed / S)`` gives it for ``S`` seeds per
        split. 0 gives 0.
    n_splits : int
        Number of splits J (>= 2).
    test_train_ratio : float
        ``n_test / n_train`` of a split (1/3 for 60/20/20 splits).
    alpha : float, default 0.05
        Two-sided level of the corrected test.

    Returns
    -------
    float
        The minimum detectable effect, in the units of ``sd``.

    Raises
    ------
    StatsInputError
        When ``sd < 0``, ``J < 2``, ``test_train_ratio < 0`` or ``alpha`` is outside (0, 1).

    Examples
    --------
    >>> round(mde80(0.03, n_splits=10, test_train_ratio=1 / 3), 4)
    0.0622
    >>> round(2.8016 * (1 / 3) ** 0.5 * 0.03, 4)  # the floor for J -> infinity
    0.0485
    >>> components = VarianceComponents(var_split=4e-4, var_seed=9e-4)  # 3 seeds averaged per split
    >>> round(mde80(components.sd(n_seeds=3), n_splits=10, test_train_ratio=1 / 3), 4)
    0.0549
    """
    # Hand-written: statsmodels' TTestPower solves for effect size with the 1/J variance of an
    # ordinary t-test; the corrected variance needs the noncentral t set up here.
    _check_design(sd, n_splits, test_train_ratio, alpha)
    if sd == 0.0:
        return 0.0
    df = n_splits - 1
    high = _limit_noncentrality(alpha)
    while _power_at(high, df, alpha) < TARGET_POWER:  # heavy tails at small J need a wider bracket
        high *= 2.0
    noncentrality = optimize.brentq(lambda nc: _power_at(nc, df, alpha) - TARGET_POWER, 0.0, high, xtol=1e-12)
    return float(noncentrality * math.sqrt(1.0 / n_splits + test_train_ratio) * sd)


def split_seed_variance(table: pd.DataFrame, split: str = COLUMNS.split, value: str = "delta") -> VarianceComponents:
    """Split and seed variance of per-run differences (random-effects moments, as the VC test uses them).

    ``var_seed = MSW``, the pooled within-split variance (``Σ (S_j - 1)`` df), and
    ``var_split = max(0, s²_m - h·MSW)`` with ``s²_m`` the variance of the split means and ``h = mean_j 1/S_j``
    (unbiased for unbalanced seeds too; truncated at 0, as usual for a moment estimator). See
    :func:`~benchmark.analysis.stats.components.split_seed_moments`.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per (split, seed) run pair, with the split label in column ``split`` and the
        difference of the two heads' metric in column ``value``.
    split, value : str
        Column names.

    Returns
    -------
    VarianceComponents
        ``var_split`` and ``var_seed``. Both are NaN when no split has two or more seeds: the seed
        noise cannot then be told apart from the split-to-split variation (use the SD of the
        per-split differences with :func:`mde80` directly).

    Raises
    ------
    StatsInputError
        When a column is missing, a value is NaN/inf, or there are fewer than 2 splits.

    Examples
    --------
    >>> runs = pd.DataFrame({"split": [0, 0, 1, 1, 2, 2], "delta": [0.01, 0.03, 0.05, 0.07, 0.03, 0.05]})
    >>> c = split_seed_variance(runs)  # MSW = 6e-4 / 3; split means 0.02, 0.06, 0.04: s²_m = 4e-4
    >>> round(c.var_seed, 6), round(c.var_split, 6)  # 4e-4 - 2e-4 / 2
    (0.0002, 0.0003)
    """
    m = split_seed_moments(table, split, value)
    if m.seed_df == 0:
        return VarianceComponents(math.nan, math.nan)
    return VarianceComponents(float(m.var_split), float(m.msw))


def _components_variance(components: VarianceComponents) -> None:
    if not all(math.isfinite(v) and v >= 0.0 for v in (components.var_split, components.var_seed)):
        raise StatsInputError(f"var_split and var_seed must be finite and >= 0, got {components}.")


def uses_vc_test(n_splits: int, n_seeds: int) -> bool:
    """Whether a balanced J x S grid gets the VC test (``J (S - 1) >= 5`` seed df) rather than the fallback."""
    return n_splits * (n_seeds - 1) >= MIN_SEED_DF


def vc_power(delta: float, components: VarianceComponents, n_splits: int, n_seeds: int, test_train_ratio: float,
             alpha: float = 0.05) -> float:
    """Power of the two-sided VC t-test (:func:`~benchmark.analysis.stats.components.vc_ttest`) of a balanced grid.

    Exact under the model (:func:`~benchmark.analysis.stats.components.rejection_rate`): ``d̄ ~ N(delta, V)``
    with ``V = var_split (1/J + r) + var_seed / (J S)``, and ``V̂`` and the critical value computed from each
    ``(s²_m, MSW)`` as the test does — the worst-share critical value for ``J < 30``, Satterthwaite's df
    (capped at ``J - 1``, the truncation of ``σ̂²_a`` at 0 included) for ``J >= 30``.

    Parameters
    ----------
    delta : float
        True mean difference.
    components : VarianceComponents
        ``var_split`` (within-grid variance of the split's true difference) and ``var_seed``; not both 0.
    n_splits, n_seeds : int
        ``J`` and ``S``, with ``J (S - 1) >= 5`` (else the grid gets the corrected test:
        :func:`corrected_ttest_power`).
    test_train_ratio : float
        ``r = n_test / n_train``.
    alpha : float, default 0.05
        Two-sided level.

    Returns
    -------
    float
        Power; at ``delta = 0`` the type-I error (at most ``alpha`` for ``J < 30``).

    Examples
    --------
    >>> c = VarianceComponents(var_split=0.0046, var_seed=0.0069)
    >>> round(vc_power(0.0, c, 10, 2, 0.32), 3), round(vc_power(0.2, c, 10, 2, 0.32), 3)
    (0.05, 0.878)
    """
    _components_variance(components)
    check_open_unit(alpha, "alpha")
    if not uses_vc_test(n_splits, n_seeds):
        raise StatsInputError(f"a {n_splits} x {n_seeds} grid has J (S - 1) < {MIN_SEED_DF} seed df: it gets the "
                              "corrected test (corrected_ttest_power).")
    if components.var_split + components.var_seed == 0.0:
        raise StatsInputError("power needs var_split + var_seed > 0.")
    nu, h = n_splits * (n_seeds - 1), 1.0 / n_seeds
    if n_splits >= SATTERTHWAITE_MIN_SPLITS:
        def critical(df: np.ndarray) -> np.ndarray:
            return stats.t.ppf(1.0 - alpha / 2.0, df)
    else:
        fixed = worst_share_critical(n_splits, nu, h, float(test_train_ratio), alpha)

        def critical(df: np.ndarray) -> np.ndarray:
            return np.full_like(df, fixed)
    return rejection_rate(delta, components.var_split, components.var_seed, n_splits, nu, h, test_train_ratio,
                          critical)


def vc_mde80(components: VarianceComponents, n_splits: int, n_seeds: int, test_train_ratio: float,
             alpha: float = 0.05) -> float:
    """Smallest true mean difference the VC t-test of a balanced J x S grid detects with 80 % power.

    Solves :func:`vc_power` ``= 0.80`` with ``scipy.optimize.brentq``. As J grows it falls to
    ``2.80 sqrt(r var_split)`` whatever S (the seed noise averages out over J S runs).

    Examples
    --------
    >>> c = VarianceComponents(var_split=0.0046, var_seed=0.0069)  # example components
    >>> [round(vc_mde80(c, j, 2, 0.32), 4) for j in (10, 50, 1000)], round(2.8016 * (0.32 * 0.0046) ** 0.5, 4)
    ([0.1786, 0.1232, 0.1082], 0.1075)
    """
    def shortfall(delta: float) -> float:
        return vc_power(delta, components, n_splits, n_seeds, test_train_ratio, alpha) - TARGET_POWER

    scale = math.sqrt(components.var_split * (1.0 / n_splits + test_train_ratio)
                      + components.var_seed / (n_splits * n_seeds))
    high = _limit_noncentrality(alpha) * scale
    while shortfall(high) < 0.0:
        high *= 2.0
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10 * high))


DEFAULT_DESIGNS = ((10, 1), (10, 2), (20, 2), (50, 2), (30, 3), (100, 1))
"""(splits, seeds per split) designs :func:`design_table` tabulates by default."""


def design_table(components: VarianceComponents, test_train_ratio: float,
                 designs: Sequence[tuple[int, int]] = DEFAULT_DESIGNS, alpha: float = 0.05) -> pd.DataFrame:
    """MDE80 and cost of (splits, seeds) designs, for a pilot grid's variance components.

    Each design is tested the way :func:`~benchmark.analysis.stats.components.variance_components_test` would
    test it: the VC t-test (:func:`vc_mde80`) when ``J (S - 1) >= 5``, otherwise the corrected test on split
    means (:func:`mde80` with ``sd = sqrt(var_split + var_seed / S)``: its nominal MDE, which treats the seed
    noise as if it were correlated like split variation — under the VC model that test's real power at the
    80 % point is somewhat higher, as :func:`corrected_ttest_power` assumes the correction is exact).

    Parameters
    ----------
    components : VarianceComponents
        A pilot's :func:`split_seed_variance`.
    test_train_ratio : float
        ``n_test / n_train``.
    designs : sequence of (int, int)
        ``(n_splits, n_seeds)`` pairs.
    alpha : float, default 0.05
        Two-sided level.

    Returns
    -------
    pandas.DataFrame
        One row per design: ``n_splits, n_seeds, runs_per_head`` (``J S``); ``mde80_dataset``, the MDE80 of the
        dataset target's paired t-test on the split means (``sd = sqrt(var_split + var_seed / S)``, no overlap
        term: it falls to 0 as J grows); then the population extrapolation's ``test`` (``"vc-worst-share"``,
        ``"vc-satterthwaite"`` or ``"corrected"``), ``mde80`` and ``floor`` (that test's MDE as J grows at this
        S, set by the assumed ``r``).

    Examples
    --------
    >>> # dataset target at J = 10, S = 1: 3.15 (80 % power, t with 9 df) x sqrt(0.0046 + 0.0069) / sqrt(10)
    >>> table = design_table(VarianceComponents(0.0046, 0.0069), 0.32, designs=[(10, 1), (10, 2), (50, 2)])
    >>> print(table.round(4).to_string(index=False))  # doctest: +NORMALIZE_WHITESPACE
     n_splits  n_seeds  runs_per_head  mde80_dataset             test  mde80  floor
           10        1             10         0.1068        corrected 0.2189 0.1700
           10        2             20         0.0894   vc-worst-share 0.1786 0.1075
           50        2            100         0.0363 vc-satterthwaite 0.1232 0.1075
    """
    _components_variance(components)
    limit = _limit_noncentrality(alpha) * math.sqrt(test_train_ratio)
    rows = []
    for j, s in designs:
        if uses_vc_test(j, s):
            test = VC_SATTERTHWAITE if j >= SATTERTHWAITE_MIN_SPLITS else VC_WORST_SHARE
            mde, floor = vc_mde80(components, j, s, test_train_ratio, alpha), limit * math.sqrt(components.var_split)
        else:
            sd = components.sd(s)
            test, mde, floor = FALLBACK_TEST, mde80(sd, j, test_train_ratio, alpha), limit * sd
        rows.append({"n_splits": j, "n_seeds": s, "runs_per_head": j * s,
                     "mde80_dataset": mde80(components.sd(s), j, 0.0, alpha), "test": test, "mde80": mde, "floor": floor})
    return pd.DataFrame(rows, columns=["n_splits", "n_seeds", "runs_per_head", "mde80_dataset", "test", "mde80",
                                       "floor"])
