"""Evidence for "no difference": the correlated Bayesian t-test with a region of practical equivalence.

* :func:`bayesian_correlated_ttest` — Corani & Benavoli (2015) for random train/test splits:
  P(B practically better), P(practically equivalent), P(A practically better);
* :func:`verdict` — those three probabilities read at a threshold (0.95 by default).

A p-value cannot say "the heads are equivalent"; the posterior mass inside the ROPE can — when the
grid is precise enough. The calibration's verdict rates (``results/calibration/summary.json`` and
``verdicts.png``, studies ``effects`` and ``reference_groups``: ROPE 0.01, J = 10, 60/20/20 splits): with
no true difference the wrong verdicts "a better" / "b better" are rare; with heads whose per-split
differences spread by several ROPEs (500 rows, or 33 references x 50 images) "equivalent" does not come
out even at a true difference of 0 — the posterior is wider than the ROPE — while with 2000 rows and
similar heads it does, at 0 and at ROPE/2. The minimum detectable effect
(:mod:`~benchmark.analysis.stats.power`) says which case a grid is in.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from benchmark.analysis.stats._inputs import StatsInputError, check_ratio, check_set_sizes, finite_vector
from benchmark.analysis.stats.frequentist import corrected_se

DEFAULT_ROPE = 0.01
"""Half-width of the region of practical equivalence, in SRCC units (grid key `rope`): two heads within
±0.01 SRCC count as practically equal."""
VERDICTS = ("a better", "b better", "equivalent", "undecided")


def bayesian_correlated_ttest(
    deltas: ArrayLike, n_train: int, n_test: int, rope: float = DEFAULT_ROPE
) -> tuple[float, float, float]:
    """Correlated Bayesian t-test (Corani & Benavoli 2015) of per-split differences, with a ROPE.

    The per-split differences ``d_j`` (head A minus head B) of ``J`` random splits are correlated
    because the splits share data; with the correlation ``rho = n_test / (n_test + n_train)`` of
    random splits (Nadeau & Bengio 2003), ``rho / (1 - rho) = n_test / n_train`` and the posterior of
    the mean difference (under the reference prior) is Student's t with ``J - 1`` degrees of freedom,
    location ``mean(d)`` and scale ``sqrt((1/J + n_test/n_train) * var(d, ddof=1))`` — the scale of
    :func:`~benchmark.analysis.stats.frequentist.corrected_resampled_ttest`, so a 95 % credible interval equals
    the corrected 95 % confidence interval.

    Parameters
    ----------
    deltas : array_like
        Per-split differences ``d_j`` (seeds averaged within a split), ``J >= 2`` finite values.
    n_train, n_test : int
        Training and test set sizes of one split.
    rope : float, default 0.01
        Half-width of the region of practical equivalence ``[-rope, rope]``, in the metric's units
        (>= 0; 0.01 SRCC by default).

    Returns
    -------
    (p_below, p_rope, p_above) : tuple of float
        Posterior probabilities of ``Δ < -rope`` (B practically better), ``|Δ| <= rope``
        (practically equivalent) and ``Δ > rope`` (A practically better); they sum to 1. When every
        ``d_j`` is identical the posterior is a point mass at that value: one of the three is 1 (a
        value exactly on ``±rope`` counts as inside the ROPE).

    Raises
    ------
    StatsInputError
        When ``J < 2``, a delta is NaN/inf, a set size is not positive, or ``rope`` is negative or
        not finite.

    Examples
    --------
    >>> p = bayesian_correlated_ttest([0.02, 0.03, 0.025, 0.035, 0.03], n_train=600, n_test=200)
    >>> [round(x, 4) for x in p]  # t(df=4, loc=0.028, scale=sqrt((1/5 + 1/3) * 3.25e-5)) = 0.004163
    [0.0004, 0.0058, 0.9938]
    >>> bayesian_correlated_ttest([0.01, 0.01, 0.01], n_train=600, n_test=200)  # on the ROPE's edge
    (0.0, 1.0, 0.0)
    """
    return correlated_posterior(deltas, check_set_sizes(n_train, n_test), rope)


def correlated_posterior(deltas: ArrayLike, r: float, rope: float = DEFAULT_ROPE) -> tuple[float, float, float]:
    """:func:`bayesian_correlated_ttest` with the split correlation given as ``r = rho / (1 - rho)``
    (``n_test / n_train`` there, or an assumed value)."""
    # Hand-written rather than baycomp.CorrelatedTTest: baycomp assumes k-fold cross-validation
    # repeated `runs` times and fixes rho = 1/k (k = J / runs, an integer); random splits have
    # rho = n_test / (n_test + n_train), which baycomp cannot take. The posterior itself is scipy's t.
    d = finite_vector(deltas, min_len=2)
    ratio = check_ratio(r)
    if not (math.isfinite(rope) and rope >= 0.0):
        raise StatsInputError(f"rope must be a finite value >= 0 (a half-width in metric units), got {rope}.")
    mean = float(np.mean(d))
    if np.all(d == d[0]):
        return float(mean < -rope), float(abs(mean) <= rope), float(mean > rope)
    posterior = stats.t(df=d.size - 1, loc=mean, scale=corrected_se(d, ratio))
    p_below = float(posterior.cdf(-rope))
    p_above = float(posterior.sf(rope))
    return p_below, max(0.0, 1.0 - p_below - p_above), p_above


def verdict(p_below: float, p_rope: float, p_above: float, threshold: float = 0.95) -> str:
    """Read the three posterior probabilities of :func:`bayesian_correlated_ttest` at ``threshold``.

    Parameters
    ----------
    p_below, p_rope, p_above : float
        P(Δ < -rope), P(|Δ| <= rope), P(Δ > rope) with Δ = A - B; each in [0, 1], summing to 1.
    threshold : float, default 0.95
        Posterior probability needed for a decision, in (0.5, 1] (so at most one can reach it).

    Returns
    -------
    str
        ``"a better"`` when ``p_above >= threshold``, ``"b better"`` when ``p_below >= threshold``,
        ``"equivalent"`` when ``p_rope >= threshold``, otherwise ``"undecided"`` (the data cannot
        tell; more splits may).

    Raises
    ------
    StatsInputError
        When a probability is outside [0, 1], they do not sum to 1 (within 1e-6), or ``threshold`` is
        outside (0.5, 1].

    Examples
    --------
    >>> verdict(0.0004, 0.0058, 0.9938)
    'a better'
    >>> verdict(0.01, 0.97, 0.02)
    'equivalent'
    >>> verdict(0.2, 0.5, 0.3)
    'undecided'
    """
    probabilities = (p_below, p_rope, p_above)
    if not all(0.0 <= p <= 1.0 for p in probabilities) or abs(sum(probabilities) - 1.0) > 1e-6:
        raise StatsInputError(
            f"(p_below, p_rope, p_above) must be probabilities summing to 1, got {probabilities}."
        )
    if not 0.5 < threshold <= 1.0:
        raise StatsInputError(f"threshold must lie in (0.5, 1], got {threshold}.")
    for p, label in ((p_above, "a better"), (p_below, "b better"), (p_rope, "equivalent")):
        if p >= threshold:
            return label
    return "undecided"
