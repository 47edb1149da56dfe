"""Per-run IQA metrics: rank and linear correlations, and errors on the MOS scale.

The IQA convention (VQEG) reports PLCC after mapping the predictions through a monotone 4-parameter
logistic fitted to the MOS, so that PLCC measures *prediction accuracy* without penalising a monotone
non-linearity; SRCC and KRCC measure *monotonicity*. RMSE and MAE are computed on the raw predictions
(already mapped back to the dataset's MOS scale by the harness), so they also measure calibration.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import expit

logger = logging.getLogger(__name__)

METRIC_LABELS: dict[str, str] = {"srcc": "SRCC", "krcc": "KRCC", "plcc": "PLCC", "plcc_raw": "PLCC (raw)",
                                  "rmse": "RMSE", "mae": "MAE"}
"""Every metric :func:`compute_metrics` returns, in reporting order, with its printed name."""
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_LABELS)
"""Keys of the dict returned by :func:`compute_metrics`, in reporting order."""
HIGHER_IS_BETTER: dict[str, bool] = {name: name not in ("rmse", "mae") for name in METRIC_NAMES}
"""Direction of each metric (correlations: higher is better; errors: lower is better)."""

MIN_SAMPLES = 3
"""Fewest (MOS, prediction) pairs :func:`compute_metrics` accepts."""

_N_LOGISTIC_PARAMS = 4
_MAXFEV = 20_000


class MetricInputError(ValueError):
    """Raised when MOS / prediction arrays cannot be scored (shape, length or non-finite values)."""


def logistic_4(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> NDArray[np.float64]:
    """Standard 4-parameter logistic used to map IQA predictions onto the MOS scale.

    ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``, evaluated as
    ``(b1 - b2) * expit((x - b3) / |b4|) + b2`` so that it never overflows.

    Parameters
    ----------
    x : array_like
        Predictions.
    b1, b2 : float
        Upper and lower asymptotes (``b1 < b2`` gives a decreasing curve).
    b3 : float
        Location of the inflection point.
    b4 : float
        Scale (slope); only its magnitude is used.

    Returns
    -------
    numpy.ndarray
        The mapped values, same shape as ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (b1 - b2) * expit((x - b3) / np.abs(b4)) + b2


@dataclass(frozen=True)
class LogisticFit:
    """A fitted monotone mapping from predictions to MOS.

    Attributes
    ----------
    kind : {"logistic", "linear"}
        ``"logistic"``: ``params`` are ``(b1, b2, b3, b4)`` of :func:`logistic_4`;
        ``"linear"`` (fallback): ``params`` are ``(slope, intercept)``.
    params : tuple of float
        Fitted parameters.
    """

    kind: Literal["logistic", "linear"]
    params: tuple[float, ...]

    def __call__(self, x: ArrayLike) -> NDArray[np.float64]:
        """Map predictions ``x`` onto the MOS scale."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "logistic":
            return logistic_4(x, *self.params)
        slope, intercept = self.params
        return slope * x + intercept

    @property
    def direction(self) -> int:
        """+1 when the mapping increases with the prediction, -1 when it decreases, 0 when flat."""
        if self.kind == "logistic":
            b1, b2, _, _ = self.params
            return int(np.sign(b1 - b2))
        return int(np.sign(self.params[0]))


def _validate(mos: ArrayLike, pred: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    try:
        y = np.asarray(mos, dtype=np.float64)
        p = np.asarray(pred, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MetricInputError(f"MOS and predictions must be numeric arrays: {err}") from err
    if y.ndim != 1 or p.ndim != 1:
        raise MetricInputError(
            f"MOS and predictions must be 1-D, got shapes {y.shape} and {p.shape}; flatten them first."
        )
    if y.shape != p.shape:
        raise MetricInputError(
            f"length mismatch: {y.size} MOS values but {p.size} predictions; "
            "score exactly one prediction per image."
        )
    if y.size < MIN_SAMPLES:
        raise MetricInputError(f"need at least {MIN_SAMPLES} samples to compute metrics, got {y.size}.")
    for name, arr in (("MOS", y), ("predictions", p)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise MetricInputError(
                f"{name} contain {bad.size} non-finite value(s) (first at index {bad[0]}: {arr[bad[0]]}); "
                "a diverged model or a missing label — fix the run, do not score it."
            )
    return y, p


def _is_constant(a: NDArray[np.float64]) -> bool:
    return bool(np.all(a == a[0]))


def _linear_fit(p: NDArray[np.float64], y: NDArray[np.float64]) -> LogisticFit:
    slope, intercept = np.polyfit(p, y, deg=1)
    return LogisticFit(kind="linear", params=(float(slope), float(intercept)))


def fit_logistic(pred: ArrayLike, mos: ArrayLike) -> LogisticFit:
    """Fit :func:`logistic_4` from predictions to MOS (least squares, ``scipy.optimize.curve_fit``).

    Initial guess: ``b1 = max(mos)``, ``b2 = min(mos)`` (swapped when predictions and MOS are
    negatively rank-correlated, so the start is already monotone in the right direction),
    ``b3 = mean(pred)``, ``b4 = std(pred)`` (1 if that is 0).

    The fit never raises for numerical reasons: when ``curve_fit`` fails to converge, returns
    non-finite values, lands in a local optimum worse than a straight line, or there are fewer
    points than parameters, a linear least-squares fit is returned instead and a warning is logged.

    Parameters
    ----------
    pred : array_like
        Predictions, 1-D, finite.
    mos : array_like
        Mean opinion scores, same length.

    Returns
    -------
    LogisticFit
        Callable mapping predictions onto the MOS scale.

    Raises
    ------
    MetricInputError
        On a length mismatch, non-finite values, fewer than 3 samples, or constant predictions
        (no mapping is identifiable).
    """
    y, p = _validate(mos, pred)
    if _is_constant(p):
        raise MetricInputError("predictions are constant; no mapping to MOS can be fitted.")
    linear = _linear_fit(p, y)
    if p.size <= _N_LOGISTIC_PARAMS:
        logger.warning("only %d samples for a 4-parameter logistic fit; using a linear fit.", p.size)
        return linear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        rho = stats.spearmanr(p, y).statistic
    hi, lo = float(np.max(y)), float(np.min(y))
    if np.isfinite(rho) and rho < 0:
        hi, lo = lo, hi
    scale = float(np.std(p)) or 1.0
    p0 = (hi, lo, float(np.mean(p)), scale)
    try:
        with warnings.catch_warnings():
            # Covariance of the parameters is never used; its estimation warning is irrelevant here.
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(logistic_4, p, y, p0=p0, maxfev=_MAXFEV)
    except (RuntimeError, ValueError) as err:
        logger.warning("logistic fit failed (%s); falling back to a linear fit.", err)
        return linear

    fit = LogisticFit(kind="logistic", params=tuple(float(b) for b in params))
    fitted = fit(p)
    if not np.all(np.isfinite(fitted)):
        logger.warning("logistic fit gave non-finite values (params %s); using a linear fit.", fit.params)
        return linear
    sse_logistic = float(np.sum((fitted - y) ** 2))
    sse_linear = float(np.sum((linear(p) - y) ** 2))
    if sse_logistic > sse_linear * (1 + 1e-9):
        logger.warning(
            "logistic fit reached a local optimum worse than a line (SSE %.6g > %.6g); using a linear fit.",
            sse_logistic,
            sse_linear,
        )
        return linear
    return fit


def _correlation(func: Callable[..., object], a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    if _is_constant(a) or _is_constant(b):
        return float("nan")
    return float(func(a, b).statistic)  # type: ignore[attr-defined]


def compute_metrics(mos: ArrayLike, pred: ArrayLike, error_range: tuple[float, float] | None = None) -> dict[str, float]:
    """Score one run's predictions against the MOS.

    Ranking and correlation metrics use the predictions exactly as given (never clamped: clamping would
    tie every prediction beyond the scale's ends). Only the errors see a bounded score.

    Parameters
    ----------
    mos : array_like
        Ground-truth mean opinion scores, 1-D, finite, on the dataset's scale.
    pred : array_like
        Predictions mapped back to the same MOS scale, same length.
    error_range : (float, float), optional
        The dataset's declared score scale: RMSE and MAE use the predictions clipped to it (a score
        outside the scale cannot be right); None leaves them unclipped.

    Returns
    -------
    dict of str to float
        ``srcc`` (Spearman), ``krcc`` (Kendall tau-b), ``plcc`` (Pearson between the MOS and the
        predictions mapped by the 4-parameter logistic fit of :func:`fit_logistic`, signed by the
        direction of the fitted mapping so that an anti-correlated model gets a negative PLCC, as it
        gets a negative SRCC), ``plcc_raw`` (Pearson on raw predictions), ``rmse``
        and ``mae`` (on the predictions clipped to ``error_range``, MOS units). When the predictions (or the MOS) are constant
        the correlations are undefined and returned as NaN — a collapsed model, reported as such,
        not an exception; ``rmse`` and ``mae`` are still defined.

    Raises
    ------
    MetricInputError
        (a ``ValueError``) on a length mismatch, non-1-D input, fewer than 3 samples, or NaN/inf values.

    Examples
    --------
    >>> m = compute_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
    >>> m["srcc"], m["rmse"], m["mae"]
    (1.0, 0.5, 0.5)
    >>> m = compute_metrics([1.0, 2.0, 3.0, 4.0], [0.2, 0.5, 3.0, 4.0], error_range=(1.0, 5.0))
    >>> m["srcc"], m["mae"]  # ranks from the raw scores; errors from 1.0, 1.0, 3.0, 4.0
    (1.0, 0.25)
    """
    y, p = _validate(mos, pred)
    err = (p if error_range is None else np.clip(p, *error_range)) - y
    out = {
        "srcc": _correlation(stats.spearmanr, y, p),
        "krcc": _correlation(stats.kendalltau, y, p),
        "plcc": float("nan"),
        "plcc_raw": _correlation(stats.pearsonr, y, p),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
    }
    if not (_is_constant(p) or _is_constant(y)):
        mapping = fit_logistic(p, y)
        out["plcc"] = mapping.direction * _correlation(stats.pearsonr, y, mapping(p))
    return out
