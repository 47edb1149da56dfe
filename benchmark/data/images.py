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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from benchmark.data.errors import CorruptImageError, MissingImagesError, raise_corrupt
from benchmark.data.parallel import map_chunks

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


def _decode_problem(path: str) -> str | None:
    """Why one file does not fully decode ("file not found", the PIL error), or None when it does."""
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        return "file not found"
    except _DECODE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class _DecodeCheck:
    """Worker task of :func:`find_bad_images`: ``(row, reason)`` of the bad files among some rows."""

    paths: Sequence[str]

    def __call__(self, rows: list[int]) -> list[tuple[int, str]]:
        problems = ((row, _decode_problem(self.paths[row])) for row in rows)
        return [(row, reason) for row, reason in problems if reason is not None]


def find_bad_images(labels: pd.DataFrame, workers: int | None = None) -> list[tuple[str, str]]:
    """List every image of a label table that is missing or that PIL cannot fully decode.

    Parameters
    ----------
    labels : pandas.DataFrame
        A label table with an ``image`` column of paths.
    workers : int, optional
        Decoding processes; None = the CPU cores this process may use (:func:`usable_cores`).

    Returns
    -------
    list of (str, str)
        ``(path, reason)`` for each bad file, in table order; empty when all decode.
    """
    paths = [str(path) for path in labels["image"]]
    found = map_chunks(_DecodeCheck(paths), range(len(paths)), workers or usable_cores(), "checking images")
    return [(paths[row], reason) for row, reason in sorted(bad for _, chunk in found for bad in chunk)]


def header_sizes(paths: Sequence[str], workers: int | None = None) -> list[tuple[int, int]]:
    """Return every file's ``(width, height)`` from its header, without decoding pixels.

    Parameters
    ----------
    paths : sequence of str
        Image files.
    workers : int, optional
        Threads reading headers (the work is mostly waiting on the disk); None = :func:`usable_cores`.

    Raises
    ------
    CorruptImageError
        Naming every file (in ``paths`` order) whose header PIL cannot read, after reading them all.
    """
    with ThreadPoolExecutor(max_workers=workers or usable_cores()) as pool:
        read = list(tqdm(pool.map(_header, paths), total=len(paths), desc="reading headers", unit="img",
                         disable=None, leave=False))
    raise_corrupt([(path, result) for path, result in zip(paths, read) if isinstance(result, str)])
    return read


def _header(path: str) -> tuple[int, int] | str:
    """A file's ``(width, height)``, or why its header cannot be read."""
    try:
        return image_size(path)
    except CorruptImageError as exc:
        return exc.reason


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
    """Number of CPU cores this process may run on (the default count of decoding workers)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
