"""Batch transforms on decoded uint8 images, in torch so they run on the batch's device (CPU or GPU).

Training uses :func:`random_crop_flip`; evaluation uses :func:`center_crop` (one centre crop per image,
no flip). All randomness comes from the ``torch.Generator`` passed in: the harness seeds it from the
cell, never from the head, so matched heads see identical crops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check(batch: torch.Tensor, out_size: int) -> None:
    if batch.dim() != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
        raise ValueError(
            f"expected a uint8 batch [B, H, W, 3], got dtype {batch.dtype} shape {tuple(batch.shape)}."
        )
    if out_size > min(batch.shape[1], batch.shape[2]):
        raise ValueError(f"crop size {out_size} exceeds the image size {tuple(batch.shape[1:3])}; decode larger.")


def to_float_chw(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [0, 1], on the batch's device."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def random_crop_flip(batch: torch.Tensor, out_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``out_size`` crop per sample plus a horizontal flip with probability 0.5.

    Parameters
    ----------
    batch : torch.Tensor
        uint8 [B, H, W, 3] (e.g. rows of :func:`~benchmark.data.images.decode_cache`).
    out_size : int
        Side of the square crop.
    generator : torch.Generator
        Source of every random draw, in this order: B crop tops, B crop lefts, B flip draws. It must
        live on the batch's device type or on the CPU.

    Returns
    -------
    torch.Tensor
        float32 [B, 3, out_size, out_size] in [0, 1], on the batch's device.
    """
    _check(batch, out_size)
    count, height, width = batch.shape[:3]
    device = generator.device
    tops = torch.randint(0, height - out_size + 1, (count,), generator=generator, device=device).to(batch.device)
    lefts = torch.randint(0, width - out_size + 1, (count,), generator=generator, device=device).to(batch.device)
    flips = (torch.rand(count, generator=generator, device=device) < 0.5).to(batch.device)
    offsets = torch.arange(out_size, device=batch.device)
    rows = tops[:, None] + offsets
    cols = lefts[:, None] + offsets
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    samples = torch.arange(count, device=batch.device)[:, None, None]
    crops = batch[samples, rows[:, :, None], cols[:, None, :]]
    return to_float_chw(crops)


def center_crop(batch: torch.Tensor, out_size: int) -> torch.Tensor:
    """Centre ``out_size`` crop of every sample (the evaluation crop).

    Parameters
    ----------
    batch : torch.Tensor
        uint8 [B, H, W, 3].
    out_size : int
        Side of the square crop; top = (H - out_size) // 2, left = (W - out_size) // 2.

    Returns
    -------
    torch.Tensor
        float32 [B, 3, out_size, out_size] in [0, 1].
    """
    _check(batch, out_size)
    top, left = (batch.shape[1] - out_size) // 2, (batch.shape[2] - out_size) // 2
    return to_float_chw(batch[:, top : top + out_size, left : left + out_size])


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
