"""What a grid could have seen: power and minimum detectable effect of the corrected resampled t-test.

* :func:`corrected_ttest_power` — power of the two-sided corrected test for a true mean difference;
* :func:`mde80` — the smallest true mean difference detected with 80 % power;
* :func:`split_seed_variance` — split-to-split and seed-to-seed variance of per-run differences;
* :func:`mde_vs_splits` — MDE over numbers of splits (and seeds): "How many splits do I need?".

The model behind all four is the one under which the corrected test is exact: per-split
differences ``d_j`` with within-grid variance ``sigma**2`` (what ``var(d, ddof=1)`` estimates) whose
mean has variance ``(1/J + n_test/n_train) * sigma**2``. The statistic is then noncentral t with
``J - 1`` degrees of freedom and noncentrality ``delta / sqrt((1/J + n_test/n_train) * sigma**2)``.
Where the correction over-states that variance the test is conservative and the true power a little
higher: with 60/20/20 splits the simulated ``Var(mean d) / E[var(d)]`` was 0.24-0.43 against the
assumed 0.43-0.45 (type-I error 0.006-0.030 at alpha = .05, ``results/calibration``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats

from benchmark.analysis.stats._inputs import StatsInputError, check_open_unit

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


def split_seed_variance(table: pd.DataFrame, split: str = "split", value: str = "delta") -> VarianceComponents:
    """Split and seed variance of per-run differences (one-way random-effects ANOVA, moments).

    With ``k`` splits, ``n_i`` runs (seeds) in split ``i`` and ``N = sum(n_i)``:
    ``MSW = sum((y - mean_i)**2) / (N - k)`` estimates ``var_seed``;
    ``MSB = sum(n_i (mean_i - mean)**2) / (k - 1)`` estimates ``var_seed + n0 * var_split`` with
    ``n0 = (N - sum(n_i**2) / N) / (k - 1)``; so ``var_split = max(0, (MSB - MSW) / n0)`` (truncated at 0,
    as is usual for the method-of-moments estimator).

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
    >>> c = split_seed_variance(runs)  # MSW = 6e-4 / 3, MSB = 2 * 8e-4 / 2, n0 = 2
    >>> round(c.var_seed, 6), round(c.var_split, 6)
    (0.0002, 0.0003)
    """
    # Hand-written: statsmodels fits this model by (RE)ML (MixedLM), not by the moment estimator.
    missing = [c for c in (split, value) if c not in table.columns]
    if missing:
        raise StatsInputError(f"the table lacks column(s) {missing}; it has {list(table.columns)}.")
    values = table[value].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise StatsInputError(f"column {value!r} holds NaN/inf; a failed run must be redone, not averaged in.")
    groups = table.groupby(split, sort=False)[value]
    sizes, means = groups.size().to_numpy(), groups.mean().to_numpy()
    k, n = sizes.size, values.size
    if k < 2:
        raise StatsInputError(f"need at least 2 splits to separate split variance, got {k}.")
    if n == k:
        return VarianceComponents(math.nan, math.nan)
    within = float(((values - groups.transform("mean").to_numpy()) ** 2).sum()) / (n - k)
    between = float((sizes * (means - values.mean()) ** 2).sum()) / (k - 1)
    n0 = (n - float((sizes**2).sum()) / n) / (k - 1)
    return VarianceComponents(max(0.0, (between - within) / n0), within)


def mde_vs_splits(
    spread: float | VarianceComponents,
    test_train_ratio: float,
    n_splits: Sequence[int] = (5, 10, 20, 30, 50, 100),
    n_seeds: Sequence[int] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The 80 %-power minimum detectable effect for several numbers of splits (and of seeds).

    For a README table "How many splits do I need?": the MDE falls with J towards the floor
    ``2.80 * sqrt(n_test/n_train) * sd`` (:func:`mde80`) that more splits cannot lower; with a
    variance decomposition, more seeds lower ``sd`` itself.

    Parameters
    ----------
    spread : float or VarianceComponents
        The SD of the per-split differences as measured (seeds already averaged), or the split and
        seed variances of :func:`split_seed_variance`.
    test_train_ratio : float
        ``n_test / n_train`` of a split.
    n_splits : sequence of int
        Numbers of splits J to tabulate.
    n_seeds : sequence of int, optional
        Seeds per split to tabulate; needs ``spread`` to be a :class:`VarianceComponents` (a plain SD
        already holds the seeds it was measured with). Default: 1 seed for components.
    alpha : float, default 0.05
        Two-sided level of the corrected test.

    Returns
    -------
    pandas.DataFrame
        Columns ``n_splits, n_seeds`` (``<NA>`` for a plain SD), ``sd_delta`` (SD of the per-split
        difference), ``mde80`` and ``floor`` (its limit as J grows).

    Examples
    --------
    >>> table = mde_vs_splits(VarianceComponents(4e-4, 9e-4), 1 / 3, n_splits=(10, 30), n_seeds=(1, 3))
    >>> table.pivot(index="n_splits", columns="n_seeds", values="mde80").round(4)  # doctest: +NORMALIZE_WHITESPACE
    n_seeds        1       3
    n_splits
    10        0.0748  0.0549
    30        0.0633  0.0464
    """
    if isinstance(spread, VarianceComponents):
        seeds = list(n_seeds or (1,))
        sds = [spread.sd(s) for s in seeds]
    else:
        if n_seeds is not None:
            raise StatsInputError(
                "n_seeds needs a VarianceComponents spread (split_seed_variance); a plain SD already holds "
                "the seeds it was measured with."
            )
        seeds, sds = [pd.NA], [float(spread)]
    floor_factor = _limit_noncentrality(alpha) * math.sqrt(test_train_ratio)
    rows = [
        {"n_splits": j, "n_seeds": s, "sd_delta": sd, "mde80": mde80(sd, j, test_train_ratio, alpha),
         "floor": floor_factor * sd}
        for s, sd in zip(seeds, sds, strict=True)
        for j in n_splits
    ]
    return pd.DataFrame(rows).astype({"n_seeds": "Int64"})
