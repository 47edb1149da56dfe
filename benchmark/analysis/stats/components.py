"""Variance-components (VC) test of per-run differences over J splits x S_j seeds per split.

Model. The difference (head A minus head B) of one run, split ``j`` and seed ``s``, is
``d_js = Δ + a_j + e_js``: ``a_j`` the split's own difference (which images train and which test), correlated
across the splits of one grid because their training sets overlap, and ``e_js`` the training noise of one
run (head initialisation, sample order, dropout), independent across splits and seeds. With

* ``m_j = mean_s d_js`` (split means), ``d̄ = mean_j m_j``, ``s²_m = var(m_j, ddof=1)`` (``J - 1`` df),
* ``MSW = Σ (d_js - m_j)² / ν_w`` with ``ν_w = Σ (S_j - 1)`` (seed noise), ``h = mean_j 1/S_j``,
* ``r = n_test / n_train`` (Nadeau & Bengio's between-split correlation ``ρ = r / (1 + r)``),

the split variance within a grid is ``σ̂²_a = max(0, s²_m - h·MSW)`` and

    ``V̂ = σ̂²_a · (1/J + r) + h·MSW / J``      (estimates ``Var(d̄)``).

Only the split part carries the ``r`` term: the seed noise of different splits is independent. The corrected
resampled t-test applied to the split means inflates both parts by ``1/J + r``, so it over-corrects the seed
noise by a factor ``1 + rJ`` (4.2 at J = 10, r = 1/3) and is conservative when seed noise is large.

* :func:`split_seed_moments` / :func:`balanced_moments` — the statistics above from a run table or an array;
* :func:`vc_ttest` — ``t = d̄ / sqrt(V̂)`` with the df rule below (vectorised over grids);
* :func:`vc_posterior` — the Bayesian posterior of Δ (Jeffreys prior on the variances, flat prior on Δ),
  by deterministic quadrature: probabilities, ROPE, credible interval (vectorised over grids);
* :func:`variance_components_test` — both, with the fallback to the corrected test, as one
  :class:`VarianceComponentsTest` record for a report row;
* :func:`rejection_rate`, :func:`worst_share_p`, :func:`worst_share_critical` — the exact null distribution
  of the VC t under the model, which the df rule and the power functions (:mod:`~benchmark.analysis.stats.power`)
  use.

**The df rule, and why.** When ``σ̂²_a > 0``, ``V̂ = (1/J + r)·s²_m - h·r·MSW`` is a difference of two mean
squares (Satterthwaite: ``df = V̂² / [((1/J + r) s²_m)² / (J - 1) + (h r MSW)² / ν_w]``); when ``σ̂²_a`` is
truncated at 0, ``V̂ = h·MSW/J`` (``ν_w`` df). The null distribution of ``t`` depends on the unknown split
share ``λ = σ²_a / (σ²_a + h σ²_e)`` alone (for given J, S, r), and :func:`rejection_rate` computes it
exactly. Over every share (study ``shares`` of the calibration, ``results/calibration/shares.md``: normal
model, S = 2-5, shares 0-1): ``df = J - 1`` was liberal at every J; Satterthwaite (capped at J - 1) held
the level for J <= 20 but was liberal from J = 30 at small shares — there ``r σ²_a`` is most of ``Var(d̄)``
yet ``σ̂²_a`` is a noisy difference of two mean squares, whose relative error grows like ``r sqrt(J)``. So:

* ``J < 30`` — ``"vc-worst-share"``: the critical value and p-value of the least favourable share
  (:func:`worst_share_critical`, :func:`worst_share_p`): at most α for every share, exactly for balanced
  grids under the normal model. At J = 10, S = 2, r = 0.32 the critical value is 2.71 (Student's df 4.3;
  the worst share is 0.57). A grid's own share follows from its components (the default grid's:
  ``var_split`` and ``var_seed`` in ``results/default/stats.csv``).
* ``J >= 30`` — ``"vc-satterthwaite"``: Satterthwaite's df, capped at ``J - 1``. The worst-share critical
  value grows with J (2.77 at J = 30, 2.92 at J = 50, 3.22 at J = 100), so more splits would lose power;
  Satterthwaite holds the level at moderate and large shares but is liberal at small ones
  (``results/calibration/shares.md``), and near share 0 its plug-in df collapses when ``σ̂²_a`` is just
  above 0, which costs power (study ``structured`` with seed noise only, ``results/calibration/structured.md``).

On ``bundled``'s real split structure (study ``structured``, ``results/calibration/structured.md``, with the
default grid's components) the VC t holds the level with no split effect, a test-composition effect and the
Nadeau-Bengio correlation; with a 25 % training share (a correlation above ``r / (1 + r)``) it is liberal in
some designs: every test that assumes that correlation is liberal there.

The Bayesian rule (:func:`vc_posterior`, "significant" when ``P(Δ > 0)`` is outside ``[0.025, 0.975]``)
integrates over the uncertainty of ``σ̂²_a`` instead; its type-I error over every share on the normal model
and on the real structure, and its power against the corrected and the VC t, are in the same two tables.

**Fallback.** With one seed per split, or fewer than :data:`MIN_SEED_DF` seed degrees of freedom, split and
seed variance cannot be told apart: :func:`variance_components_test` then runs the corrected resampled
t-test and the correlated Bayesian t-test on the split means and says so (``test = "corrected"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

from benchmark.analysis.stats._inputs import StatsInputError, check_open_unit, check_ratio
from benchmark.analysis.stats.bayes import DEFAULT_ROPE, correlated_posterior, verdict
from benchmark.analysis.stats.frequentist import corrected_ci, corrected_se, corrected_ttest
from benchmark.schema import COLUMNS

MIN_SEED_DF = 5
"""Fewest seed degrees of freedom ``ν_w = Σ (S_j - 1)`` for the VC test; below it the seed variance is too
poorly known to subtract, and the corrected test on split means is used."""
SATTERTHWAITE_MIN_SPLITS = 30
"""From this many splits on the VC t-test takes Satterthwaite's df; below, the worst-share critical value."""
VC_WORST_SHARE = "vc-worst-share"
"""``test`` name of the VC t-test with J < 30: critical value and p-value of the least favourable split share."""
VC_SATTERTHWAITE = "vc-satterthwaite"
"""``test`` name of the VC t-test with J >= 30: Satterthwaite's df (capped at J - 1)."""
FALLBACK_TEST = "corrected"
"""``test`` name of the fallback: corrected resampled t-test (Nadeau & Bengio) on the split means."""
QUADRATURE_NODES = 64
"""Nodes of the posterior quadrature (error about 1e-9 in the probabilities)."""

Float = float | NDArray[np.float64]


@dataclass(frozen=True)
class SplitSeedMoments:
    """Summary statistics of per-run differences over J splits x S_j seeds (the module docstring's notation).

    The data fields (``mean``, ``var_means``, ``msw``) are floats for one table, or arrays of one value per
    grid when many grids of one design are summarised at once (:func:`balanced_moments`).

    Attributes
    ----------
    mean : float or ndarray
        ``d̄``, the mean of the split means.
    var_means : float or ndarray
        ``s²_m``, the variance of the split means (ddof 1).
    msw : float or ndarray
        ``MSW``, the pooled within-split (seed) variance; NaN when ``seed_df == 0``.
    n_splits : int
        ``J``.
    seed_df : int
        ``ν_w = Σ (S_j - 1)``.
    h : float
        ``mean_j 1 / S_j`` (``1/S`` when balanced).
    """

    mean: Float
    var_means: Float
    msw: Float
    n_splits: int
    seed_df: int
    h: float

    @property
    def var_split(self) -> Float:
        """``σ̂²_a = max(0, s²_m - h·MSW)``: the split variance within the grid (NaN when ``seed_df == 0``)."""
        return np.maximum(0.0, self.var_means - self.h * self.msw)

    def variance_of_mean(self, test_train_ratio: float) -> Float:
        """``V̂ = σ̂²_a (1/J + r) + h·MSW / J``, the estimated variance of ``d̄``."""
        return self.var_split * (1.0 / self.n_splits + test_train_ratio) + self.h * self.msw / self.n_splits


def split_seed_moments(runs: pd.DataFrame, split: str = COLUMNS.split, value: str = "delta") -> SplitSeedMoments:
    """:class:`SplitSeedMoments` of a run table (one row per split and seed; unbalanced seeds allowed).

    Parameters
    ----------
    runs : pandas.DataFrame
        One row per (split, seed) run pair: the split label in column ``split`` and the difference of the
        two heads' metric in column ``value``.
    split, value : str
        Column names.

    Returns
    -------
    SplitSeedMoments

    Raises
    ------
    StatsInputError
        When a column is missing, a value is NaN/inf, or there are fewer than 2 splits.

    Examples
    --------
    >>> runs = pd.DataFrame({"split": [0, 0, 1, 1, 1, 2], "delta": [0.0, 0.02, 0.03, 0.05, 0.04, 0.01]})
    >>> m = split_seed_moments(runs)  # split means 0.01, 0.04, 0.01; seeds 2, 3, 1
    >>> round(m.mean, 4), round(m.var_means, 6), round(m.msw, 6), m.seed_df, round(m.h, 4)
    (0.02, 0.0003, 0.000133, 3, 0.6111)
    """
    missing = [c for c in (split, value) if c not in runs.columns]
    if missing:
        raise StatsInputError(f"the run table lacks column(s) {missing}; it has {list(runs.columns)}.")
    values = runs[value].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise StatsInputError(
            f"column {value!r} holds {bad.size} NaN/inf value(s) (first in split {runs[split].iloc[bad[0]]}); "
            "a failed run must be scored or redone, not averaged in."
        )
    groups = runs.groupby(split, sort=False)[value]
    sizes, means = groups.size().to_numpy(), groups.mean().to_numpy()
    if sizes.size < 2:
        raise StatsInputError(f"need at least 2 splits, got {sizes.size}.")
    seed_df = int(values.size - sizes.size)
    within = float(((values - groups.transform("mean").to_numpy()) ** 2).sum())
    return SplitSeedMoments(
        mean=float(means.mean()), var_means=float(means.var(ddof=1)),
        msw=within / seed_df if seed_df else math.nan, n_splits=int(sizes.size), seed_df=seed_df,
        h=float(np.mean(1.0 / sizes)),
    )


def balanced_moments(deltas: ArrayLike) -> SplitSeedMoments:
    """:class:`SplitSeedMoments` of balanced grids, vectorised: ``deltas`` has shape ``(..., J, S)``.

    Examples
    --------
    >>> m = balanced_moments([[0.0, 0.02], [0.03, 0.05], [0.01, 0.01]])  # J = 3 splits x S = 2 seeds
    >>> round(float(m.mean), 4), round(float(m.var_means), 6), round(float(m.msw), 6), m.seed_df, m.h
    (0.02, 0.0003, 0.000133, 3, 0.5)
    """
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim < 2 or d.shape[-2] < 2 or d.shape[-1] < 1:
        raise StatsInputError(f"deltas must have shape (..., J >= 2, S >= 1), got {d.shape}.")
    if not np.isfinite(d).all():
        raise StatsInputError("deltas contain NaN/inf; a failed run must be scored or redone, not averaged in.")
    j, s = d.shape[-2:]
    means = d.mean(axis=-1)
    seed_df = j * (s - 1)
    msw = ((d - means[..., None]) ** 2).sum(axis=(-2, -1)) / seed_df if seed_df else np.full(means.shape[:-1], np.nan)
    return SplitSeedMoments(mean=means.mean(axis=-1), var_means=means.var(axis=-1, ddof=1), msw=msw,
                            n_splits=j, seed_df=seed_df, h=1.0 / s)


def _check_vc(m: SplitSeedMoments, test_train_ratio: float) -> None:
    if m.seed_df < 1:
        raise StatsInputError("the VC test needs seed_df >= 1 (some split with two seeds); use the corrected test.")
    if not (math.isfinite(test_train_ratio) and test_train_ratio > 0.0):
        raise StatsInputError(f"test_train_ratio (n_test / n_train) must be finite and > 0, got {test_train_ratio}.")


def _satterthwaite_df(m: SplitSeedMoments, test_train_ratio: float) -> Float:
    """``min(Satterthwaite, J - 1)`` for ``V̂`` (``ν_w`` where ``σ̂²_a`` is truncated at 0), vectorised."""
    j, nu = m.n_splits, m.seed_df
    v = m.variance_of_mean(test_train_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = v**2 / (((1.0 / j + test_train_ratio) * m.var_means) ** 2 / (j - 1)
                     + (m.h * test_train_ratio * m.msw) ** 2 / nu)
    return np.minimum(np.where(m.var_split > 0.0, df, nu), j - 1.0)


class _NullNodes(NamedTuple):
    """Quadrature nodes of ``(s²_m, MSW)`` under the VC model (:func:`rejection_rate`)."""

    se: NDArray[np.float64]  # sqrt(V̂) at each node, (nodes, nodes + 1): column 0 = below the truncation cut
    df: NDArray[np.float64]  # min(Satterthwaite, J - 1) at each node
    weights: NDArray[np.float64]  # (nodes, nodes + 1): the nodes' probabilities, summing to 1
    sd: float  # sqrt(Var(d̄))
    split_hat: NDArray[np.float64]  # σ̂²_a at each node


def _null_nodes(var_split: float, var_seed: float, n_splits: int, seed_df: int, h: float,
                test_train_ratio: float, nodes: int, true_ratio: float | None = None) -> _NullNodes:
    j, nu, r = n_splits, seed_df, test_train_ratio
    r_true = r if true_ratio is None else true_ratio
    var_means = var_split + h * var_seed
    u, w = _nodes(nodes)
    msw = var_seed * stats.chi2.ppf(u, nu) / nu
    cut = stats.chi2.cdf((j - 1) * h * msw / var_means, j - 1)  # P(s²_m <= h MSW): σ̂²_a truncated at 0
    above = var_means * stats.chi2.ppf(cut[:, None] + (1.0 - cut[:, None]) * u, j - 1) / (j - 1)
    # Column 0 stands for every s²_m below the cut (there V̂ = h MSW / J whatever s²_m); the others lie above it.
    m = SplitSeedMoments(mean=0.0, var_means=np.concatenate([np.zeros((nodes, 1)), above], axis=1),
                         msw=np.repeat(msw[:, None], nodes + 1, axis=1), n_splits=j, seed_df=nu, h=h)
    weights = w[:, None] * np.concatenate([cut[:, None], (1.0 - cut[:, None]) * w], axis=1)
    return _NullNodes(np.sqrt(m.variance_of_mean(r)), _satterthwaite_df(m, r), weights,
                      math.sqrt(var_split * (1.0 / j + r_true) + h * var_seed / j), m.var_split)


def rejection_rate(delta: float, var_split: float, var_seed: float, n_splits: int, seed_df: int, h: float,
                   test_train_ratio: float, critical: Callable[[NDArray[np.float64]], NDArray[np.float64]],
                   nodes: int = 48, true_ratio: float | None = None) -> float:
    """``P(|d̄| > critical(df) sqrt(V̂))`` under the VC model, by quadrature (exact up to the node count).

    ``d̄ ~ N(delta, V)``, ``V = var_split (1/J + r) + h var_seed / J``, independent of
    ``s²_m ~ σ²_m χ²_{J-1} / (J-1)`` (``σ²_m = var_split + h var_seed``) and ``MSW ~ var_seed χ²_ν / ν``;
    ``V̂`` and Satterthwaite's df are computed at every node as :func:`vc_ttest` does. Gauss-Legendre on the
    quantile scales of both chi-squares, the ``s²_m`` integral cut where ``σ̂²_a`` reaches 0. Exact for
    balanced grids (``h = 1/S``). (Hand-written: no library has the distribution of this statistic.)

    Parameters
    ----------
    delta : float
        True mean difference.
    var_split, var_seed : float
        ``σ²_a`` and ``σ²_e``, >= 0, with ``var_split + var_seed > 0``.
    n_splits, seed_df : int
        ``J`` and ``ν = Σ (S_j - 1) >= 1``.
    h : float
        ``mean_j 1/S_j``.
    test_train_ratio : float
        ``r``.
    critical : callable
        Maps an array of df to the critical values of ``|t|``.
    nodes : int, default 48
        Nodes per dimension.
    true_ratio : float, optional
        The split correlation the data really have, when it differs from the ``test_train_ratio`` the test
        assumes (``V`` then uses it, ``V̂`` the assumed one): the error of a wrong assumption.

    Returns
    -------
    float
        Rejection rate: the type-I error at ``delta = 0``, the power otherwise.

    Examples
    --------
    >>> from scipy import stats
    >>> round(rejection_rate(0.0, 1.0, 0.0, 10, 10, 0.5, 0.32, lambda df: stats.t.ppf(0.975, df)), 4)  # no seed noise:
    0.05
    >>> # V̂ is the corrected variance and t is exactly Student's t with J - 1 df.
    """
    q = _null_nodes(var_split, var_seed, n_splits, seed_df, h, test_train_ratio, nodes, true_ratio)
    half = critical(q.df) * q.se
    reject = stats.norm.sf((half - delta) / q.sd) + stats.norm.cdf((-half - delta) / q.sd)
    return float(np.sum(q.weights * reject))


SHARES = np.linspace(0.0, 1.0, 101)
"""Split shares ``λ = σ²_a / (σ²_a + h σ²_e)`` over which the worst-share rule takes its maximum."""
_TAIL_GRID = np.linspace(0.0, 12.0, 241)


@lru_cache(maxsize=64)
def _worst_share_tails(n_splits: int, seed_df: int, h: float, test_train_ratio: float) -> NDArray[np.float64]:
    """``max_λ P_λ(|T| > c)`` on :data:`_TAIL_GRID` (``Δ = 0``; the statistic is scale-free, so ``σ²_m = 1``)."""
    tails = np.zeros_like(_TAIL_GRID)
    for share in SHARES:
        q = _null_nodes(share, (1.0 - share) / h, n_splits, seed_df, h, test_train_ratio, nodes=48)
        rates = np.sum(q.weights * 2.0 * stats.norm.sf(_TAIL_GRID[:, None, None] * q.se / q.sd), axis=(1, 2))
        tails = np.maximum(tails, rates)
    tails[0] = 1.0  # P(|T| >= 0), which the quadrature gives up to rounding
    return np.minimum(tails, 1.0)


def worst_share_p(t: Float, n_splits: int, seed_df: int, h: float, test_train_ratio: float) -> Float:
    """Two-sided p-value of the VC t under the least favourable split share: ``max_λ P_λ(|T| >= |t|)``.

    Valid (exactly, for balanced grids under the normal model) whatever the unknown share of split variance
    ``λ = σ²_a / (σ²_a + h σ²_e)`` is. Interpolated (log-linear in ``|t|``, step 0.05) from the tails of
    :func:`rejection_rate` over :data:`SHARES`; ``p = 1`` at ``t = 0``, ``p = 0`` for ``|t| = inf``.

    Examples
    --------
    >>> round(worst_share_p(2.7, 10, 10, 0.5, 0.32), 3)  # vs 2 * t.sf(2.7, df=9) = 0.024
    0.051
    """
    tails = _worst_share_tails(n_splits, seed_df, float(h), float(test_train_ratio))
    log_p = np.interp(np.abs(t), _TAIL_GRID, np.log(np.maximum(tails, 1e-300)))
    p = np.where(np.isinf(t), 0.0, np.exp(log_p))
    return float(p) if np.ndim(p) == 0 else p


@lru_cache(maxsize=16)
def _share_nodes(n_splits: int, seed_df: int, h: float, nodes: int = 48) -> tuple[NDArray[np.float64], ...]:
    """``(σ̂²_a, h MSW / J, weights)`` at every quadrature node, one row per split share (:data:`SHARES`,
    ``σ²_m = 1``); none depends on ``r``, so the VC t's null at any ``r`` is read off them cheaply."""
    split, seed, weights = [], [], []
    for share in SHARES:
        q = _null_nodes(share, (1.0 - share) / h, n_splits, seed_df, h, 0.0, nodes)
        split.append(q.split_hat)
        seed.append(q.se**2 - q.split_hat / n_splits)  # h MSW / J = V̂(r = 0) - σ̂²_a / J
        weights.append(q.weights)
    return np.array(split), np.array(seed), np.array(weights)


def worst_share_p_at(t: float, n_splits: int, seed_df: int, h: float, test_train_ratio: float) -> float:
    """:func:`worst_share_p` at one ``t``, computed at that point rather than interpolated from the tail table.

    ``max_λ P_λ(|T| >= |t|)`` over :data:`SHARES` with the same quadrature; ~10 ms for a new ``r`` where the
    tail table takes seconds, so a search over ``r`` (:func:`benchmark.analysis.stats.targets.break_even_r`)
    can afford it. Agrees with the table's value to its interpolation error (~1e-3 relative).

    Examples
    --------
    >>> round(worst_share_p_at(2.7, 10, 10, 0.5, 0.32), 3)
    0.051
    """
    split_hat, seed_part, weights = _share_nodes(n_splits, seed_df, float(h))
    r, j = float(test_train_ratio), n_splits
    se = np.sqrt(split_hat * (1.0 / j + r) + seed_part)
    sd = np.sqrt(SHARES * (1.0 / j + r) + (1.0 - SHARES) / j)[:, None, None]
    tails = np.sum(weights * 2.0 * stats.norm.sf(abs(t) * se / sd), axis=(1, 2))
    return float(min(1.0, tails.max())) if math.isfinite(t) else 0.0


@lru_cache(maxsize=256)
def worst_share_critical(n_splits: int, seed_df: int, h: float, test_train_ratio: float,
                         alpha: float = 0.05) -> float:
    """Critical value of ``|t|`` at level ``alpha`` under the least favourable split share (:func:`worst_share_p`).

    Examples
    --------
    >>> round(worst_share_critical(10, 10, 0.5, 0.32), 3)  # t_{0.975, 9} = 2.262; the share 0.57 is the worst
    2.711
    """
    check_open_unit(alpha, "alpha")
    return float(optimize.brentq(lambda c: worst_share_p(c, n_splits, seed_df, h, test_train_ratio) - alpha,
                                 0.0, _TAIL_GRID[-1], xtol=1e-10))


class VCTTest(NamedTuple):
    """Result of :func:`vc_ttest` (floats for one grid, arrays for many)."""

    t: Float
    df: Float
    p: Float
    se: Float
    critical: Float
    test: str


def vc_ttest(m: SplitSeedMoments, test_train_ratio: float, alpha: float = 0.05) -> VCTTest:
    """VC t-test of ``Δ = 0``: ``t = d̄ / sqrt(V̂)``, two-sided, with the df rule of the module docstring.

    * ``J >= 30`` (``"vc-satterthwaite"``): Satterthwaite's df of ``V̂ = (1/J + r) s²_m - h r MSW`` when
      ``σ̂²_a > 0``, ``ν_w`` when ``σ̂²_a`` is truncated at 0 (``V̂ = h MSW / J``); capped at ``J - 1``.
    * ``J < 30`` (``"vc-worst-share"``): the p-value and critical value of the least favourable split share
      (:func:`worst_share_p`, :func:`worst_share_critical`); ``df`` is the Student df with the same critical
      value at ``alpha`` (what the interval uses).

    Parameters
    ----------
    m : SplitSeedMoments
        From :func:`split_seed_moments` or :func:`balanced_moments` (arrays: one test per grid).
    test_train_ratio : float
        ``r = n_test / n_train`` of a split.
    alpha : float, default 0.05
        Level of ``critical`` (the interval ``d̄ ± critical * se``) and of the worst-share ``df``.

    Returns
    -------
    VCTTest
        ``(t, df, p, se, critical, test)``: statistic, degrees of freedom, two-sided p-value,
        ``se = sqrt(V̂)``, the ``1 - alpha/2`` critical value, the rule's name. When every difference is
        identical (``V̂ = 0``): ``t = ±inf, p = 0`` for a non-zero mean, ``t = 0, p = 1`` for zero.

    Examples
    --------
    >>> m = SplitSeedMoments(mean=0.02, var_means=4e-4, msw=2e-4, n_splits=30, seed_df=30, h=0.5)
    >>> res = vc_ttest(m, 1 / 3)  # V̂ = 3e-4 * (1/30 + 1/3) + 0.5 * 2e-4 / 30 = 1.1333e-4
    >>> # df = V̂² / ((11/30 * 4e-4)² / 29 + (0.5/3 * 2e-4)² / 30)
    >>> round(res.se, 5), round(res.t, 4), round(res.df, 3), round(res.p, 4), res.test
    (0.01065, 1.8787, 16.493, 0.0781, 'vc-satterthwaite')
    >>> small = vc_ttest(SplitSeedMoments(0.02, 4e-4, 2e-4, n_splits=10, seed_df=10, h=0.5), 1 / 3)
    >>> round(small.t, 4), round(small.critical, 3), round(small.df, 2), round(small.p, 3), small.test
    (1.6903, 2.729, 4.18, 0.161, 'vc-worst-share')
    """
    _check_vc(m, test_train_ratio)
    check_open_unit(alpha, "alpha")
    j, nu = m.n_splits, m.seed_df
    v = m.variance_of_mean(test_train_ratio)
    se = np.sqrt(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(v > 0.0, m.mean / se, np.where(m.mean == 0.0, 0.0, np.copysign(np.inf, m.mean)))
    if j >= SATTERTHWAITE_MIN_SPLITS:
        df = _satterthwaite_df(m, test_train_ratio)
        p, critical, test = 2.0 * special.stdtr(df, -np.abs(t)), stats.t.ppf(1.0 - alpha / 2.0, df), VC_SATTERTHWAITE
    else:
        p = worst_share_p(t, j, nu, m.h, test_train_ratio)
        critical = worst_share_critical(j, nu, float(m.h), float(test_train_ratio), alpha)
        # Hand-written inversion: the Student df whose 1 - alpha/2 quantile is the worst-share critical value.
        df = optimize.brentq(lambda d: stats.t.ppf(1.0 - alpha / 2.0, d) - critical, 0.05, j - 1.0 + 1e-9)
        df, critical, test = np.full_like(t, df, dtype=float), np.full_like(t, critical, dtype=float), VC_WORST_SHARE
    if np.ndim(t) == 0:
        return VCTTest(float(t), float(df), float(p), float(se), float(critical), test)
    return VCTTest(t, df, p, se, critical, test)


def vc_p_at(m: SplitSeedMoments, test_train_ratio: float) -> float:
    """The two-sided p-value of :func:`vc_ttest` for one grid, with the worst-share p computed at its ``t``
    (:func:`worst_share_p_at`) rather than interpolated: cheap for any ``r``, for break-even searches."""
    _check_vc(m, test_train_ratio)
    if m.n_splits >= SATTERTHWAITE_MIN_SPLITS:
        return float(vc_ttest(m, test_train_ratio).p)
    v = float(m.variance_of_mean(test_train_ratio))
    t = float(m.mean) / math.sqrt(v) if v > 0.0 else (0.0 if m.mean == 0.0 else math.inf)
    return worst_share_p_at(t, m.n_splits, m.seed_df, m.h, test_train_ratio)


def _nodes(n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Quadrature nodes and weights on (0, 1) for integrals over a probability scale.

    Gauss-Legendre in ``s`` after ``v = (1 - cos(pi s)) / 2``, which clusters the nodes at both ends: the
    integrands (functions of chi-square and beta quantiles) have algebraic singularities there, which cost
    plain Gauss-Legendre its fast convergence (1e-6 with 128 nodes against 1e-9 with 64 here).
    """
    x, w = np.polynomial.legendre.leggauss(n)
    s = (x + 1.0) / 2.0
    return (1.0 - np.cos(np.pi * s)) / 2.0, w * np.pi * np.sin(np.pi * s) / 4.0


class VCPosterior:
    """Posterior of Δ under the VC model: a finite mixture of Student-t components, one per quadrature node.

    Prior: flat on Δ; Jeffreys on ``(σ²_m, σ²_e)``, ``p ∝ 1 / (σ²_m σ²_e)`` on ``σ²_m >= h σ²_e``, where
    ``σ²_m = σ²_a + h σ²_e`` is the expected ``s²_m`` (for balanced S this is Box & Tiao's prior on
    ``σ²_1 = S σ²_a + σ²_e >= σ²_e`` and ``σ²_e``). Then ``(J-1) s²_m / σ²_m ~ χ²_{J-1}`` and
    ``ν_w MSW / σ²_e ~ χ²_{ν_w}``, independent, truncated to the constraint, and given the variances
    ``Δ ~ N(d̄, V)`` with ``V = σ²_a (1/J + r) + h σ²_e / J``.

    Quadrature, exact up to the node count. Write ``1/σ²_m = 2 G_1 / A`` and ``1/σ²_e = 2 G_2 / B`` with
    ``A = (J-1) s²_m``, ``B = h ν_w MSW`` (so the constraint is ``G_2 / G_1 >= B / A``) and ``G_1, G_2``
    Gamma(``(J-1)/2``), Gamma(``ν_w/2``). Then ``W = G_1 / (G_1 + G_2) ~ Beta((J-1)/2, ν_w/2)`` is
    independent of ``G = G_1 + G_2 ~ Gamma(n/2)``, ``n = J - 1 + ν_w``, the constraint is ``W <= A/(A + B)``
    alone, and ``V = Q(W) / (2G)``; integrating the normal over ``G`` gives Student's t with ``n`` df and
    scale ``sqrt(Q(W) / n)``. The remaining integral over the truncated Beta is a quadrature sum on its
    quantile scale (:data:`QUADRATURE_NODES` nodes), so the truncation is exact. (Hand-written: no library
    has this posterior.)

    Build it with :func:`vc_posterior`. Arrays of grids broadcast: ``scales`` has shape ``(..., nodes)``.
    """

    def __init__(self, mean: Float, scales: NDArray[np.float64], weights: NDArray[np.float64], df: int):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scales = scales
        self.weights = weights
        self.df = df

    def cdf(self, x: Float) -> Float:
        """``P(Δ <= x)``; ``x`` broadcasts against the grids."""
        z = (np.asarray(x, dtype=np.float64) - self.mean)[..., None] / self.scales
        out = np.clip(np.sum(self.weights * special.stdtr(self.df, z), axis=-1), 0.0, 1.0)  # rounding
        return float(out) if out.ndim == 0 else out

    def sf(self, x: Float) -> Float:
        """``P(Δ > x)``."""
        z = (self.mean - np.asarray(x, dtype=np.float64))[..., None] / self.scales
        out = np.clip(np.sum(self.weights * special.stdtr(self.df, z), axis=-1), 0.0, 1.0)  # rounding
        return float(out) if out.ndim == 0 else out

    def rope(self, rope: float) -> tuple[Float, Float, Float]:
        """``(P(Δ < -rope), P(|Δ| <= rope), P(Δ > rope))``."""
        below, above = self.cdf(-rope), self.sf(rope)
        inside = np.maximum(0.0, 1.0 - np.asarray(below) - above)
        return below, float(inside) if inside.ndim == 0 else inside, above

    def two_sided(self) -> Float:
        """``2 min(P(Δ <= 0), P(Δ > 0))``: significant at level α when below α (the posterior is symmetric)."""
        z = -np.abs(self.mean)[..., None] / self.scales
        out = 2.0 * np.sum(self.weights * special.stdtr(self.df, z), axis=-1)
        return float(out) if out.ndim == 0 else out

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Central credible interval of one grid (``scipy.optimize.brentq`` on the mixture's cdf)."""
        check_open_unit(confidence, "confidence")
        if self.mean.ndim:
            raise StatsInputError("interval() takes one grid; index the moments first.")
        q = (1.0 + confidence) / 2.0
        # The mixture's quantile lies between the components' quantiles.
        tq = stats.t.ppf(q, self.df)
        low, high = float(self.scales.min()) * tq, float(self.scales.max()) * tq
        half = low if high - low <= 1e-15 * high else optimize.brentq(
            lambda h: self.sf(float(self.mean) + h) - (1.0 - q), low, high, xtol=1e-14 * high, rtol=1e-12)
        return float(self.mean) - half, float(self.mean) + half


def vc_posterior(m: SplitSeedMoments, test_train_ratio: float, nodes: int = QUADRATURE_NODES) -> VCPosterior:
    """Posterior of Δ under the VC model (:class:`VCPosterior`), for one grid or an array of grids.

    Parameters
    ----------
    m : SplitSeedMoments
        With ``seed_df >= 1``; not every difference identical (``s²_m + MSW > 0``).
    test_train_ratio : float
        ``r = n_test / n_train``.
    nodes : int, default 64
        Quadrature nodes.

    Examples
    --------
    >>> m = SplitSeedMoments(mean=0.02, var_means=4e-4, msw=2e-4, n_splits=10, seed_df=10, h=0.5)
    >>> post = vc_posterior(m, 1 / 3)
    >>> [round(p, 4) for p in post.rope(0.01)], round(post.sf(0.0), 4)  # 4e6 Monte Carlo draws: .0181 .1858 .7961 .9364
    ([0.0182, 0.186, 0.7959], 0.9364)
    >>> [round(x, 4) for x in post.interval(0.95)]  # Monte Carlo quantiles -0.00745, 0.04747
    [-0.0075, 0.0475]
    """
    _check_vc(m, test_train_ratio)
    k, nu, j, h = m.n_splits - 1, m.seed_df, m.n_splits, m.h
    a = np.asarray(k * m.var_means, dtype=np.float64)[..., None]
    b = np.asarray(h * nu * m.msw, dtype=np.float64)[..., None]
    if np.any(a + b <= 0.0):
        raise StatsInputError("every difference is identical (s²_m = MSW = 0): the posterior is a point mass.")
    v, weights = _nodes(nodes)
    w_max = a / (a + b)  # the constraint W <= A / (A + B)
    mass = special.betainc(k / 2.0, nu / 2.0, w_max)
    with np.errstate(divide="ignore", invalid="ignore"):
        # tau = W / w_max in (0, 1]; as w_max -> 0 (s²_m -> 0) its law tends to Beta(k/2, 1): tau = v^(2/k).
        tau = np.where(mass > 1e-300, special.betaincinv(k / 2.0, nu / 2.0, v * mass) / w_max, v ** (2.0 / k))
        seed = np.where(b > 0.0, b / (1.0 - w_max * tau), 0.0)  # h ν MSW / (1 - W) = 2G h σ²_e
    split = (a + b) / tau - seed  # 2G σ²_a >= 0 (zero at tau = 1, the constraint's edge)
    q = split * (1.0 / j + test_train_ratio) + seed / j
    n = k + nu
    return VCPosterior(m.mean, np.sqrt(q / n), weights, n)


@dataclass(frozen=True)
class VarianceComponentsTest:
    """One comparison's VC test (or its fallback): the fields of a report row.

    Attributes
    ----------
    test : str
        ``"vc-worst-share"`` (J < 30) or ``"vc-satterthwaite"`` (J >= 30), the VC t-test's df rule
        (:func:`vc_ttest`); or ``"corrected"`` (:data:`FALLBACK_TEST`), the corrected resampled t-test on the
        split means.
    note : str
        Why the fallback was taken; empty for the VC test.
    n_splits, n_runs, seed_df : int
        ``J``, the number of runs (pairs), ``ν_w``.
    mean : float
        ``d̄``.
    se_mean : float
        ``sqrt(V̂)``, or the corrected SE ``sqrt((1/J + r) s²_m)`` in the fallback.
    df, t, p : float
        Degrees of freedom, statistic and two-sided p-value of the frequentist test (for ``vc-worst-share``
        ``df`` is the Student df with the rule's critical value at ``alpha``).
    ci_low, ci_high : float
        Confidence interval (``1 - alpha``) that inverts that test: ``d̄ ± critical · se_mean``.
    var_split, var_seed : float
        ``σ̂²_a`` and ``MSW`` (NaN with one seed per split).
    split_share : float
        ``σ̂²_a / (σ̂²_a + h MSW)``: the split part of the split means' variance (NaN with one seed per split).
    r : float
        ``n_test / n_train``.
    rope : float
        ROPE half-width.
    p_below, p_rope, p_above : float
        Posterior ``P(Δ < -rope)``, ``P(|Δ| <= rope)``, ``P(Δ > rope)``.
    verdict : str
        :func:`~benchmark.analysis.stats.bayes.verdict` of those at ``threshold``.
    p_bayes : float
        ``2 min(P(Δ <= 0), P(Δ > 0))``; usable as a p-value (for Holm).
    significant : bool
        ``P(Δ > 0)`` outside ``[alpha/2, 1 - alpha/2]`` (``p_bayes < alpha``).
    cred_low, cred_high : float
        Central ``1 - alpha`` credible interval (it excludes 0 exactly when ``significant``).
    """

    test: str
    note: str
    n_splits: int
    n_runs: int
    seed_df: int
    mean: float
    se_mean: float
    df: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    var_split: float
    var_seed: float
    split_share: float
    r: float
    rope: float
    p_below: float
    p_rope: float
    p_above: float
    verdict: str
    p_bayes: float
    significant: bool
    cred_low: float
    cred_high: float


def _fallback(runs: pd.DataFrame, ratio: float, rope: float, alpha: float, threshold: float, split: str,
              value: str) -> dict[str, Any]:
    """The corrected test and the correlated Bayesian t-test on the split means (identical intervals)."""
    means = runs.groupby(split, sort=False)[value].mean().to_numpy()
    t, p = corrected_ttest(means, ratio)
    low, high = corrected_ci(means, ratio, 1.0 - alpha)
    posterior = correlated_posterior(means, ratio, rope)
    p_above_zero = correlated_posterior(means, ratio, 0.0)[2]
    return {"se_mean": corrected_se(means, ratio), "df": float(means.size - 1), "t": t, "p": p, "ci_low": low,
            "ci_high": high, **dict(zip(("p_below", "p_rope", "p_above"), posterior, strict=True)),
            "verdict": verdict(*posterior, threshold=threshold), "p_bayes": p,
            "significant": not alpha / 2.0 <= p_above_zero <= 1.0 - alpha / 2.0, "cred_low": low, "cred_high": high}


def variance_components_test(
    runs: pd.DataFrame,
    r: float,
    rope: float = DEFAULT_ROPE,
    *,
    alpha: float = 0.05,
    threshold: float = 0.95,
    split: str = COLUMNS.split,
    value: str = "delta",
) -> VarianceComponentsTest:
    """VC test of per-run differences over J splits x S_j seeds (frequentist t and Bayesian posterior).

    Parameters
    ----------
    runs : pandas.DataFrame
        One row per (split, seed) where both heads ran: split label in ``split``, the difference (head A
        minus head B) in ``value``. Unbalanced seeds are allowed (the posterior then uses ``h = mean 1/S_j``,
        exact for balanced designs).
    r : float
        The split correlation the test assumes: ``n_test / n_train`` of a split (Nadeau & Bengio), or another
        assumed value.
    rope : float, default 0.01
        Half-width of the region of practical equivalence.
    alpha : float, default 0.05
        Level of the intervals (``1 - alpha``) and of ``significant``.
    threshold : float, default 0.95
        Posterior probability a verdict needs.
    split, value : str
        Column names.

    Returns
    -------
    VarianceComponentsTest
        ``test`` names the rule: ``"vc-worst-share"`` / ``"vc-satterthwaite"``, or ``"corrected"`` when every
        split has one seed or ``ν_w < 5``.

    Raises
    ------
    StatsInputError
        On a missing column, NaN/inf values, fewer than 2 splits, bad set sizes, rope, alpha or threshold.

    Examples
    --------
    >>> runs = pd.DataFrame({"split": np.repeat(np.arange(5), 2),
    ...                      "delta": [0.01, 0.03, 0.04, 0.02, 0.05, 0.07, 0.02, 0.0, 0.03, 0.05]})
    >>> res = variance_components_test(runs, r=200 / 600)
    >>> res.test, round(res.var_split, 6), round(res.var_seed, 6), round(res.se_mean, 5)  # s²_m = 3.7e-4, MSW = 2e-4
    ('vc-worst-share', 0.00027, 0.0002, 0.01281)
    >>> round(res.t, 4), round(res.df, 3), round(res.p, 4), res.verdict, round(res.p_above, 4), res.significant
    (2.4988, 3.125, 0.085, 'undecided', 0.9122, False)
    >>> one_seed = variance_components_test(runs.groupby("split", as_index=False).mean(), 200 / 600)
    >>> one_seed.test, one_seed.note[:34], round(one_seed.p, 4)  # = corrected_ttest of the split means
    ('corrected', 'one seed per split: split and seed', 0.085)
    """
    ratio = check_ratio(r)
    if not (math.isfinite(rope) and rope >= 0.0):
        raise StatsInputError(f"rope must be a finite value >= 0 (a half-width in metric units), got {rope}.")
    check_open_unit(alpha, "alpha")
    m = split_seed_moments(runs, split, value)
    known = m.seed_df > 0
    var_split, var_seed = (float(m.var_split), float(m.msw)) if known else (math.nan, math.nan)
    share_total = var_split + m.h * var_seed
    common = {"n_splits": m.n_splits, "n_runs": len(runs), "seed_df": m.seed_df, "mean": float(m.mean),
              "var_split": var_split, "var_seed": var_seed, "r": ratio, "rope": rope,
              "split_share": var_split / share_total if share_total > 0 else math.nan}
    if m.seed_df < MIN_SEED_DF:
        note = ("one seed per split: split and seed variance cannot be told apart" if not known else
                f"only {m.seed_df} seed degree(s) of freedom (< {MIN_SEED_DF}): the seed variance is too poorly "
                "known to subtract")
        return VarianceComponentsTest(test=FALLBACK_TEST, note=note + "; corrected test on the split means",
                                      **common, **_fallback(runs, ratio, rope, alpha, threshold, split, value))
    res = vc_ttest(m, ratio, alpha)
    if res.se == 0.0:  # every difference identical: a point mass at the mean
        mean = float(m.mean)
        probs = (float(mean < -rope), float(abs(mean) <= rope), float(mean > rope))
        p_bayes, cred = float(mean == 0.0), (mean, mean)
    else:
        posterior = vc_posterior(m, ratio)
        probs = tuple(float(x) for x in posterior.rope(rope))
        p_bayes, cred = float(posterior.two_sided()), posterior.interval(1.0 - alpha)
    half = res.critical * res.se
    return VarianceComponentsTest(
        test=res.test, note="", **common, se_mean=res.se, df=res.df, t=res.t, p=res.p, ci_low=float(m.mean) - half,
        ci_high=float(m.mean) + half, p_below=probs[0], p_rope=probs[1], p_above=probs[2],
        verdict=verdict(*probs, threshold=threshold), p_bayes=p_bayes, significant=p_bayes < alpha,
        cred_low=cred[0], cred_high=cred[1])
