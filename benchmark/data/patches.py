"""Patch sampling at native resolution: where patches come from, cutting them out, averaging their scores.

The patch side is the backbone's input size. A batch of patches is image-major: the ``n`` patches of
the batch's image ``b`` are rows ``b * n .. b * n + n - 1``, so :func:`mean_over_patches` turns per-patch
predictions into per-image scores with one reshape.

* Training (:func:`train_patch_positions`): ``n`` uniformly random positions per image, each flipped
  horizontally with probability 1/2, drawn ONLY from the ``torch.Generator`` passed in (the harness seeds
  it from the cell, so matched heads see identical patches).
* Test and validation (:func:`test_patch_positions`, :func:`batch_test_positions`): a fixed grid that
  depends only on the image's size, the patch and ``n``; no flips.

Images smaller than the patch are an error, never padded (padding adds flat borders, a fake quality
signal) nor upscaled (interpolation blurs): :func:`~benchmark.data.patch_store.build_image_store`
names such files before decoding anything, and the functions here check again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike

from benchmark.data.policy import grid_side

if TYPE_CHECKING:
    from benchmark.data.patch_store import ImageStore


@dataclass(frozen=True)
class PatchPositions:
    """Source of every patch of a batch, image-major (``per_image`` consecutive rows per image).

    Attributes
    ----------
    images : torch.Tensor
        int64 [M], store row of each patch.
    tops, lefts : torch.Tensor
        int64 [M], top-left corner of each patch in its stored image.
    flips : torch.Tensor
        bool [M], horizontal flip.
    patch : int
        Patch side.
    per_image : int
        Patches per image (``M = batch size * per_image``).
    """

    images: torch.Tensor
    tops: torch.Tensor
    lefts: torch.Tensor
    flips: torch.Tensor
    patch: int
    per_image: int


def _batch_shapes(shapes: ArrayLike, indices: Sequence[int], patch: int) -> torch.Tensor:
    """``(height, width)`` [B, 2] of the batch's images, checked to hold a ``patch`` square."""
    rows = np.asarray(indices, dtype=np.int64)
    batch = torch.as_tensor(np.asarray(shapes, dtype=np.int64)[rows])
    small = (batch < patch).any(dim=1)
    if small.any():
        bad = [(int(row), tuple(batch[k].tolist())) for k, row in enumerate(rows) if small[k]]
        raise ValueError(
            f"patch {patch} exceeds the stored (height, width) of store rows {bad[:5]}; build the store with "
            "this patch size (build_image_store names such files) or use a smaller patch."
        )
    return batch


def train_patch_positions(shapes: ArrayLike, indices: Sequence[int], per_image: int, patch: int,
                          generator: torch.Generator) -> PatchPositions:
    """Draw ``per_image`` random patches with random horizontal flips for each image of a batch.

    Parameters
    ----------
    shapes : array_like
        ``(height, width)`` of every stored image, e.g. :attr:`ImageStore.shapes`.
    indices : sequence of int
        Store rows of the batch's images (B of them).
    per_image : int
        Patches per image (the policy's ``train_patches``).
    patch : int
        Patch side.
    generator : torch.Generator
        A CPU generator, the ONLY source of randomness. With ``M = B * per_image`` patches in image-major
        order, it is drawn in this order: M float64 uniforms for the tops, M for the lefts, M float32
        uniforms for the flips; ``top = floor(u * (H - patch + 1))`` (likewise left), flip where u < 0.5.
        Every position in ``[0, H - patch] x [0, W - patch]`` is equally likely.

    Returns
    -------
    PatchPositions

    Raises
    ------
    ValueError
        When an image is smaller than the patch, ``per_image`` < 1, or the generator is not on the CPU.
    """
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    if generator.device.type != "cpu":
        raise ValueError(f"patch positions are drawn on the CPU; got a generator on {generator.device}")
    batch = _batch_shapes(shapes, indices, patch)
    free = (batch - patch + 1).repeat_interleave(per_image, dim=0)
    count = len(free)
    unit_tops = torch.rand(count, generator=generator, dtype=torch.float64)
    unit_lefts = torch.rand(count, generator=generator, dtype=torch.float64)
    flips = torch.rand(count, generator=generator) < 0.5
    tops = torch.minimum((unit_tops * free[:, 0]).long(), free[:, 0] - 1)
    lefts = torch.minimum((unit_lefts * free[:, 1]).long(), free[:, 1] - 1)
    images = torch.as_tensor(np.asarray(indices, dtype=np.int64)).repeat_interleave(per_image)
    return PatchPositions(images, tops, lefts, flips, patch, per_image)


def test_patch_positions(height: int, width: int, patch: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` fixed test patches of one image: a regular grid spread over the whole image.

    The grid has ``s = ceil(sqrt(n))`` rows and columns; row ``r`` starts at ``r * (H - patch) // (s - 1)``
    (first row at the top, last at the bottom; a single row is centred at ``(H - patch) // 2``, the
    classic centre crop), columns alike. When ``n < s * s``, the ``n`` cells
    taken are spread evenly over the ``s * s`` cells in raster order (cell ``round(j (s^2 - 1) / (n - 1))``).
    So ``n = 1`` is the centre patch, ``n = 5`` the four corners and the centre, ``n = 25`` a 5 x 5 grid.

    Parameters
    ----------
    height, width : int
        Stored image size (>= ``patch``).
    patch : int
        Patch side.
    n : int
        Number of patches (>= 1).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        int64 tops [n] and lefts [n], in raster order.

    Examples
    --------
    >>> [t.tolist() for t in test_patch_positions(384, 512, 224, 1)]
    [[80], [144]]
    >>> [t.tolist() for t in test_patch_positions(384, 512, 224, 5)]
    [[0, 0, 80, 160, 160], [0, 288, 144, 0, 288]]
    """
    if n < 1 or min(height, width) < patch:
        raise ValueError(f"need n >= 1 and an image of at least {patch}x{patch}; got n={n}, {width}x{height}")
    side = grid_side(n)
    last = side * side - 1
    cells = torch.tensor([0 if n == 1 else (2 * j * last + n - 1) // (2 * (n - 1)) for j in range(n)])
    rows, cols = cells // side, cells % side
    if side == 1:
        return rows + (height - patch) // 2, cols + (width - patch) // 2
    return rows * (height - patch) // (side - 1), cols * (width - patch) // (side - 1)


# pytest collects module-level callables named test_*; this one is library code.
test_patch_positions.__test__ = False


def batch_test_positions(shapes: ArrayLike, indices: Sequence[int], per_image: int, patch: int) -> PatchPositions:
    """The fixed test patches (:func:`test_patch_positions`) of every image of a batch, image-major.

    Parameters
    ----------
    shapes : array_like
        ``(height, width)`` of every stored image, e.g. :attr:`ImageStore.shapes`.
    indices : sequence of int
        Store rows of the batch's images.
    per_image : int
        Patches per image (the policy's ``test_patches``).
    patch : int
        Patch side.

    Returns
    -------
    PatchPositions
        No flips.
    """
    batch = _batch_shapes(shapes, indices, patch)
    corners = [test_patch_positions(int(height), int(width), patch, per_image) for height, width in batch.tolist()]
    tops = torch.cat([top for top, _ in corners])
    lefts = torch.cat([left for _, left in corners])
    images = torch.as_tensor(np.asarray(indices, dtype=np.int64)).repeat_interleave(per_image)
    return PatchPositions(images, tops, lefts, torch.zeros(len(tops), dtype=torch.bool), patch, per_image)


def extract_patches(store: ImageStore, positions: PatchPositions, pin_memory: bool = False,
                    flip: bool = True) -> torch.Tensor:
    """Copy a batch of patches out of the store.

    Each patch is one numpy copy out of the memory map (C code, no torch op per patch: torch's
    intra-op threads would start a parallel region for every patch, ruinous on a busy machine).

    Parameters
    ----------
    store : ImageStore
        The images (memory-mapped; only the patches' pixels are read).
    positions : PatchPositions
        From :func:`train_patch_positions` or :func:`batch_test_positions`.
    pin_memory : bool
        Allocate the result in page-locked memory for a fast non-blocking copy to a GPU (needs CUDA).
    flip : bool
        Apply ``positions.flips`` here (:func:`flip_patches`); False leaves that to the caller, e.g. on the
        GPU after the copy, where it costs nothing.

    Returns
    -------
    torch.Tensor
        uint8 [M, patch, patch, 3] on the CPU, image-major; convert with
        :func:`~benchmark.data.transforms.to_float_chw` and :func:`~benchmark.data.transforms.normalize`
        (best after moving the uint8 batch to the GPU: 4x fewer bytes).
    """
    size = positions.patch
    out = torch.empty((len(positions.images), size, size, 3), dtype=torch.uint8, pin_memory=pin_memory)
    target = out.numpy()
    pixels = store.pixels.view(np.ndarray)  # plain array: numpy.memmap slicing costs ~20 % more per patch
    images = positions.images.numpy()
    starts, heights, widths = store.offsets[images], store.shapes[images, 0], store.shapes[images, 1]
    rows = zip(starts.tolist(), heights.tolist(), widths.tolist(), positions.tops.tolist(), positions.lefts.tolist())
    for k, (start, height, width, top, left) in enumerate(rows):
        image = pixels[start : start + height * width * 3].reshape(height, width, 3)
        target[k] = image[top : top + size, left : left + size]
    return flip_patches(out, positions.flips) if flip else out


def flip_patches(patches: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flip the patches ``flips`` marks horizontally, in place, on whatever device they are.

    On a GPU one indexing op flips them all; on the CPU each is flipped by its own op, since torch's
    batched indexing of uint8 tensors is ~20x slower there (6 ms vs 0.4 ms for 64 patches of 224 px).

    Parameters
    ----------
    patches : torch.Tensor
        uint8 (or float) [M, patch, patch, 3], as :func:`extract_patches` gives them.
    flips : torch.Tensor
        bool [M] (CPU), e.g. ``PatchPositions.flips``.

    Returns
    -------
    torch.Tensor
        ``patches`` itself.

    Examples
    --------
    >>> flip_patches(torch.arange(8).reshape(2, 1, 2, 2), torch.tensor([False, True]))[:, 0].tolist()
    [[[0, 1], [2, 3]], [[6, 7], [4, 5]]]
    """
    rows = flips.nonzero().flatten()
    if patches.device.type == "cpu":
        for row in rows.tolist():
            patches[row] = patches[row].flip(1)
    elif len(rows):
        rows = rows.to(patches.device)
        patches[rows] = patches[rows].flip(2)
    return patches


def mean_over_patches(predictions: torch.Tensor, per_image: int) -> torch.Tensor:
    """Average image-major per-patch predictions [B * n, ...] into per-image scores [B, ...].

    Examples
    --------
    >>> mean_over_patches(torch.tensor([1.0, 3.0, 10.0, 20.0]), 2).tolist()
    [2.0, 15.0]
    """
    if per_image < 1 or len(predictions) % per_image:
        raise ValueError(f"{len(predictions)} predictions do not split into groups of {per_image} patches per image")
    return predictions.reshape(len(predictions) // per_image, per_image, *predictions.shape[1:]).mean(dim=1)
