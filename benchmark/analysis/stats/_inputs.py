"""Input validation shared by the statistics modules, and their named error."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


class StatsInputError(ValueError):
    """Raised when the inputs of a statistical test are unusable (too few values, NaN, bad shape)."""


def finite_vector(values: ArrayLike, min_len: int, what: str = "deltas") -> NDArray[np.float64]:
    """``values`` as a 1-D float array of at least ``min_len`` finite values, else :class:`StatsInputError`."""
    d = np.asarray(values, dtype=np.float64)
    if d.ndim != 1:
        raise StatsInputError(f"{what} must be 1-D (one value per split), got shape {d.shape}.")
    if d.size < min_len:
        raise StatsInputError(f"need at least {min_len} {what}, got {d.size}; run more splits.")
    bad = np.flatnonzero(~np.isfinite(d))
    if bad.size:
        raise StatsInputError(
            f"{what} contain {bad.size} non-finite value(s) (first at index {bad[0]}); "
            "a failed run must be redone, not averaged in."
        )
    return d


def check_set_sizes(n_train: float, n_test: float) -> float:
    """``n_test / n_train`` after checking both sizes are positive and finite."""
    if not (np.isfinite(n_train) and np.isfinite(n_test) and n_train > 0 and n_test > 0):
        raise StatsInputError(f"n_train and n_test must be positive, got n_train={n_train}, n_test={n_test}.")
    return n_test / n_train


def check_ratio(r: float) -> float:
    """A split correlation ``r`` (``n_test / n_train`` or an assumed value), checked finite and > 0."""
    if not (np.isfinite(r) and r > 0):
        raise StatsInputError(f"the split correlation r must be finite and > 0, got {r}.")
    return float(r)


def check_open_unit(value: float, name: str) -> None:
    """Raise :class:`StatsInputError` unless ``0 < value < 1`` (a confidence level, alpha, power)."""
    if not 0.0 < value < 1.0:
        raise StatsInputError(f"{name} must lie in (0, 1), got {value}.")
