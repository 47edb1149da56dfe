"""Decode-once image cache: every image of a label table decoded a single time into a uint8 array.

An epoch then reads ``[N, size, size, 3]`` arrays from a memory-mapped ``.npy`` instead of decoding
JPEG/PNG/BMP files again. Each image is decoded with PIL as RGB (EXIF orientation is not applied, as
in the datasets' own reference code), its shorter side resized to ``size`` (bicubic, antialiased),
and centre-cropped to ``size x size``. For JPEGs, PIL's ``draft`` mode first lets the decoder
downscale by a power of two while keeping the shorter side >= 2 x ``size``, a large speed-up with no
visible effect after the final antialiased resize.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from benchmark.data.cache import atomic_file, cache_root, stable_hash
from benchmark.data.errors import CorruptImageError, MissingImagesError

logger = logging.getLogger(__name__)

DECODE_VERSION = 1
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def image_size(path: str | Path) -> tuple[int, int]:
    """Return a file's ``(width, height)`` from its header, without decoding pixels.

    Raises
    ------
    CorruptImageError
        When PIL cannot identify the file (names the file).
    """
    try:
        with Image.open(path) as image:
            return image.size
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(str(path), f"{type(exc).__name__}: {exc}") from exc


def open_rgb(path: str | Path, draft: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
    """Decode one image file as RGB, letting JPEG decoders downscale while the file is read.

    Parameters
    ----------
    path : str or Path
        The image file.
    draft : callable, optional
        ``draft(width, height) -> (width, height)``: from the file's size, the smallest size the decoded
        image may have (PIL ``draft``: a power-of-two DCT downscale, JPEG only). None decodes at full size,
        every pixel exactly as stored.

    Raises
    ------
    CorruptImageError
        When PIL cannot open or fully decode the file (names the file).
    """
    try:
        with Image.open(path) as image:
            if draft is not None:
                image.draft("RGB", draft(image.width, image.height))
            return image.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise CorruptImageError(str(path), f"{type(exc).__name__}: {exc}") from exc


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image to a uint8 array [size, size, 3]: shorter side resized to ``size``, centre crop.

    Raises
    ------
    CorruptImageError
        When PIL cannot open or fully decode the file (names the file).
    """

    def draft(width: int, height: int) -> tuple[int, int]:
        scale = 2 * size / min(width, height)
        return round(width * scale), round(height * scale)

    rgb = open_rgb(path, draft)
    scale = size / min(rgb.size)
    width, height = max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))
    resized = rgb.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def find_bad_images(labels: pd.DataFrame) -> list[tuple[str, str]]:
    """List every image of a label table that is missing or that PIL cannot fully decode.

    Parameters
    ----------
    labels : pandas.DataFrame
        A label table with an ``image`` column of paths.

    Returns
    -------
    list of (str, str)
        ``(path, reason)`` for each bad file, in table order; empty when all decode.
    """
    bad = []
    for path in tqdm(labels["image"].tolist(), desc="checking images", unit="img", disable=None):
        try:
            with Image.open(path) as image:
                image.load()
        except FileNotFoundError:
            bad.append((path, "file not found"))
        except _DECODE_ERRORS as exc:
            bad.append((path, f"{type(exc).__name__}: {exc}"))
    return bad


def file_states(paths: Sequence[str], source: str) -> list[tuple[str, int, int]]:
    """Return ``(path, size in bytes, modification time in ns)`` of every file, for cache keys.

    Raises
    ------
    MissingImagesError
        Naming ``source`` and the listed files that do not exist.
    """
    states, missing = [], []
    for path in paths:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            missing.append(path)
            continue
        states.append((path, info.st_size, info.st_mtime_ns))
    if missing:
        layout = "every path in labels['image'] must be an existing file (load_labels checks that)"
        raise MissingImagesError(source, missing, len(paths), layout)
    return states


def usable_cores() -> int:
    """Number of CPU cores this process may run on (the default count of decoding threads)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cache_key(paths: Sequence[str], size: int) -> str:
    """Hash of the image paths, their sizes and modification times, the output size and the code version."""
    stats = file_states(paths, "labels passed to decode_cache")
    return stable_hash({"images": stats, "size": size, "version": DECODE_VERSION})


def decode_cache(
    labels: pd.DataFrame, size: int, cache_dir: Path | None = None, workers: int | None = None
) -> np.ndarray:
    """Return every image of ``labels`` decoded once, as a read-only memory-mapped uint8 array.

    Parameters
    ----------
    labels : pandas.DataFrame
        A label table; its ``image`` column (absolute paths) sets the order of the array.
    size : int
        Output side: shorter side resized to ``size``, centre crop ``size x size``.
    cache_dir : Path, optional
        Folder of the ``.npy`` files; ``cache_root() / "decoded"`` when None.
    workers : int, optional
        Decoding threads (PIL releases the GIL); None = the CPU cores this process may use.

    Returns
    -------
    numpy.ndarray
        Read-only ``numpy.memmap`` of shape ``[N, size, size, 3]``, dtype uint8, row ``i`` = ``labels`` row ``i``.
        Stored as ``<cache_dir>/<hash>.npy`` where the hash covers the paths, file sizes, modification
        times, ``size`` and :data:`DECODE_VERSION`; built atomically and reused when present.

    Raises
    ------
    CorruptImageError
        Naming the first file that does not decode (no cache file is left behind).
    MissingImagesError
        When listed files do not exist.
    """
    paths = [str(path) for path in labels["image"]]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "decoded"
    target = folder / f"{_cache_key(paths, size)}.npy"
    if not target.is_file():
        logger.info("decoding %d images at %d px into %s", len(paths), size, target)
        workers = workers or usable_cores()
        with atomic_file(target) as temp:
            array = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                decoded = pool.map(lambda path: decode_image(path, size), paths)
                progress = tqdm(decoded, total=len(paths), desc="decoding", unit="img", disable=None)
                for index, image in enumerate(progress):
                    array[index] = image
            array.flush()
            del array
    return np.load(target, mmap_mode="r")
