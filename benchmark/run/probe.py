"""The linear-probe reference of a cell: closed-form ridge regression on the initial backbone's features.

It is the yardstick of the fair-comparison protocol: a trained head that ends clearly below a ridge
regression on the very features it starts from is under-trained, whatever its loss (the report's health
check flags it). The probe sees the standardised frozen features of the cell's initial backbone
(fine-tuning: the weights before training), its ridge penalty is chosen on val SRCC from a log grid,
and it is scored once on the test split like a head.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

PROBE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 5, 13))
"""Ridge penalties tried (features are standardised, so one grid fits every backbone)."""


@dataclass(frozen=True)
class ProbeFit:
    """The selected ridge probe and what it predicts.

    Attributes
    ----------
    alpha : float
        Penalty with the best val SRCC (ties: the larger penalty, the simpler model).
    val_srcc : float
        Its val SRCC.
    predictions : numpy.ndarray
        Its predictions (``u`` scale) for every row of the cell.
    """

    alpha: float
    val_srcc: float
    predictions: np.ndarray


def ridge_path(features: np.ndarray, targets: np.ndarray, train_idx: np.ndarray,
               alphas: tuple[float, ...]) -> np.ndarray:
    """Predictions for every row of ridge regressions (with intercept) fitted on the training rows, one
    per penalty: the same models as ``sklearn.linear_model.Ridge(alpha)``.

    Hand-written: selecting the penalty on val needs every penalty's predictions, and one symmetric
    eigendecomposition gives them all — of the Gram matrix ``Xc Xc^T`` when there are fewer training rows
    than features (``beta = Xc^T (K + alpha I)^-1 y``), else of ``Xc^T Xc`` — where scikit-learn refits from
    scratch per penalty (13 refits cost ~10x more on the CPU default grid).

    Returns
    -------
    numpy.ndarray, shape (len(alphas), N)
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)[train_idx]
    x_mean, y_mean = x[train_idx].mean(axis=0), y.mean()
    centred, y_centred, rows = x[train_idx] - x_mean, y - y_mean, x - x_mean
    if len(train_idx) <= x.shape[1]:
        eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)
        projected, weights = rows @ (centred.T @ vectors), vectors.T @ y_centred
    else:
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
        projected, weights = rows @ vectors, vectors.T @ (centred.T @ y_centred)
    eigenvalues = np.clip(eigenvalues, 0.0, None)  # round-off can leave tiny negative ones
    shrink = weights / (eigenvalues + np.asarray(alphas, dtype=np.float64)[:, None])
    return shrink @ projected.T + y_mean


def fit_probe(features: np.ndarray, targets: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
              val_truth: np.ndarray, alphas: tuple[float, ...] = PROBE_ALPHAS) -> ProbeFit:
    """Fit ridge regressions of ``targets`` on standardised ``features`` and keep the best on val SRCC.

    Parameters
    ----------
    features : numpy.ndarray, shape (N, F)
        Standardised features of every row of the cell (standardised with the training part's statistics).
    targets : numpy.ndarray, shape (N,)
        Head targets ``u`` in [0, 1]; only the training rows are read for fitting.
    train_idx, val_idx : numpy.ndarray
        Rows of the training and validation parts.
    val_truth : numpy.ndarray
        What validation predictions are ranked against (unclipped, higher = better).
    alphas : tuple of float
        Penalties to try.

    Returns
    -------
    ProbeFit
        The best penalty; ties go to the larger penalty (the simpler model). When no penalty gives a
        finite val SRCC (constant predictions), the largest penalty with ``val_srcc`` NaN.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((300, 5)); y = x @ [1.0, 0.5, 0, 0, 0]
    >>> fit = fit_probe(x, y, np.arange(200), np.arange(200, 300), y[200:])
    >>> round(fit.val_srcc, 3)
    1.0
    """
    order = sorted(alphas, reverse=True)
    predictions = ridge_path(features, targets, train_idx, tuple(order))
    with warnings.catch_warnings():  # a constant prediction has no rank correlation: NaN, never selected
        warnings.simplefilter("ignore")
        scores = [float(spearmanr(p[val_idx], val_truth).statistic) for p in predictions]
    finite = [i for i, score in enumerate(scores) if np.isfinite(score)]
    best = max(finite, key=lambda i: (scores[i], -i)) if finite else 0
    return ProbeFit(order[best], scores[best], predictions[best])


__all__ = ["PROBE_ALPHAS", "ProbeFit", "fit_probe", "ridge_path"]
