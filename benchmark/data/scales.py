"""Score scales: the declared range and direction of a dataset, and the MOS <-> u mapping.

Heads see only ``u`` in [0, 1], higher = better. ``u`` is computed with the dataset's *declared*
scale (never the observed range of a split), so the mapping is fixed before any data is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one dataset's labels.

    Attributes
    ----------
    name : str
        Registry name (``koniq10k``, ``live``, ``bundled``...) or the CSV stem of a custom dataset.
    scale_lo, scale_hi : float
        Declared score scale; ``u = (mos - lo) / (hi - lo)`` (flipped when lower is better), clamped.
    higher_is_better : bool
        Direction of the score column (False for DMOS datasets such as LIVE and CSIQ).
    synthetic : bool
        True when images are distortions of shared references (``ref`` groups hold several rows).
    n_rows : int
        Number of labelled images.
    """

    name: str
    scale_lo: float
    scale_hi: float
    higher_is_better: bool
    synthetic: bool
    n_rows: int


def mos_to_u(mos: ArrayLike, info: DatasetInfo) -> np.ndarray:
    """Map scores on the dataset's scale to ``u`` in [0, 1], higher = better.

    Parameters
    ----------
    mos : array_like
        Scores as in the label file (MOS or DMOS).
    info : DatasetInfo
        The dataset's declared scale and direction.

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape, clamped to [0, 1].

    Examples
    --------
    >>> live = DatasetInfo("live", 0.0, 100.0, False, True, 779)
    >>> mos_to_u([0.0, 25.0, 111.8], live).tolist()
    [1.0, 0.75, 0.0]
    """
    frac = (np.asarray(mos, dtype=np.float64) - info.scale_lo) / (info.scale_hi - info.scale_lo)
    frac = np.clip(frac, 0.0, 1.0)
    return frac if info.higher_is_better else 1.0 - frac


def u_to_mos(u: ArrayLike, info: DatasetInfo) -> np.ndarray:
    """Map ``u`` in [0, 1] back to the dataset's score scale (exact inverse of :func:`mos_to_u` on the scale).

    Parameters
    ----------
    u : array_like
        Normalised scores, higher = better (predictions of a head).
    info : DatasetInfo
        The dataset's declared scale and direction.

    Returns
    -------
    numpy.ndarray
        float64 array of scores on ``[scale_lo, scale_hi]`` in the label file's direction.

    Examples
    --------
    >>> koniq = DatasetInfo("koniq10k", 1.0, 5.0, True, False, 10073)
    >>> u_to_mos([0.0, 0.5, 1.0], koniq).tolist()
    [1.0, 3.0, 5.0]
    """
    frac = np.asarray(u, dtype=np.float64)
    frac = frac if info.higher_is_better else 1.0 - frac
    return info.scale_lo + frac * (info.scale_hi - info.scale_lo)
