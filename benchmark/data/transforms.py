"""Batch transforms from uint8 patches to model inputs, in torch on the batch's device (CPU or GPU).

Patches come from :func:`~benchmark.data.patches.extract_patches` (where they are cut and flipped);
here they only become float ``[B, 3, H, W]`` in [0, 1] (:func:`to_float_chw`) and are normalised with
the backbone's statistics (:func:`normalize`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def to_float_chw(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [0, 1], on the batch's device, in channels-last memory
    (the batch's own layout: no transposing copy; ``.contiguous()`` gives the other)."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` on a float [B, 3, H, W] batch (e.g. ImageNet statistics).

    Examples
    --------
    >>> normalize(torch.ones(1, 3, 1, 1), (0.5, 0.5, 0.0), (0.5, 0.25, 2.0)).flatten().tolist()
    [1.0, 2.0, 0.5]
    """
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t
