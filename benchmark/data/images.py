"""Image decoding shared by the image store and the checks: headers, RGB decoding, file states, bad files.

Every image is decoded with PIL as RGB (EXIF orientation is not applied, as in the datasets' own
reference code). :func:`decode_image` is the ``imagenet`` policy's decoder (shorter side resized to
``size``, bicubic and antialiased, then the centre ``size x size`` square); for JPEGs, PIL's ``draft``
mode first lets the decoder downscale by a power of two while keeping the shorter side >= 2 x ``size``,
a large speed-up with no visible effect after the final antialiased resize. The store
(:mod:`benchmark.data.patch_store`) decodes each image once with these functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from benchmark.data.errors import CorruptImageError, MissingImagesError

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
