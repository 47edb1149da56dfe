"""Small helpers shared by the baseline heads."""

from __future__ import annotations

import torch
from torch import Tensor


def bin_centres(num_bins: int, like: Tensor) -> Tensor:
    """Centres ``(i + 0.5) / K`` of the ``K`` equal bins of [0, 1], on ``like``'s device and dtype.

    Parameters
    ----------
    num_bins : int
        Number of bins ``K``.
    like : Tensor
        Tensor whose device and dtype the result takes.

    Returns
    -------
    Tensor, shape (K,)
        Bin centres.
    """
    return (torch.arange(num_bins, device=like.device, dtype=like.dtype) + 0.5) / num_bins


def check_positive(head: str, key: str, value: float) -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming the head and key when it is not > 0.

    Parameters
    ----------
    head : str
        Registry name of the head.
    key : str
        Hyper-parameter name.
    value : float
        Value to check.

    Returns
    -------
    float
        The value as a float.
    """
    if not value > 0:
        raise ValueError(f"head {head!r}: hyper-parameter {key!r} must be > 0, got {value!r}.")
    return float(value)
