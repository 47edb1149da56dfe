"""The embedded default dataset ``bundled``: offline, deterministic, built once and cached.

Its labels are a PROXY, not human opinion: a fixed ensemble of full-reference metrics
(:mod:`benchmark.data.proxy_mos`) scores each distorted crop against its pristine crop, mapped to 1-5.

Recipe (:class:`BundledRecipe`, default :data:`DEFAULT_RECIPE`): the 11 natural colour photographs
shipped inside installed packages (:mod:`benchmark.data.photos`), each resized so its shorter side is
1.5 x 256 px and cut into 3 crops of 256 x 256 at fixed positions; every crop is degraded by 10 of the
distortion types of :mod:`benchmark.data.distortions` (:data:`DEFAULT_DISTORTIONS`) at 5 levels:
11 x 3 x 10 x 5 = 1650 images.
Noise is drawn from a generator seeded by (recipe seed, photo, crop, distortion, level), so the same
recipe gives identical pixels and labels. Images are stored as lossless PNG (compressed ones carry
their decoded codec artefacts).

``ref`` is the reference crop (``<photo>_c<crop>``): as in KADID-10k or TID2013, all distorted versions of
one reference stay on one side of a split. Crops of one photo do not overlap much but share its
style, so cross-crop generalisation is easier than generalising to a new photograph (with whole photos
as groups, 11 photos leave ~7 for training and frozen ImageNet features then barely generalise).
Columns beyond the standard ones: ``level`` (1-5), ``crop`` (index), ``photo``, and the raw metric values.

Cache: ``<cache>/bundled/<key>/`` with ``images/*.png``, ``labels.csv`` and ``recipe.json``, where
``<cache>`` is :func:`~benchmark.data.cache.cache_root` and ``key`` hashes the recipe, :data:`RECIPE_VERSION`
and the versions of the libraries that produce pixels and metrics. The folder is written under a
temporary name and renamed when complete, so a killed build never leaves a partial entry (only a
``.tmp-*`` sibling, which is ignored and can be deleted).
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from benchmark.data.cache import atomic_directory, cache_root, stable_hash
from benchmark.data.distortions import DISTORTIONS, LEVELS, apply_distortion
from benchmark.data.errors import RecipeError
from benchmark.data.labels import assemble, check_scale, check_unique, locate_images, parse_scores
from benchmark.data.photos import PHOTO_NAMES, as_array, fixed_crops, load_photo
from benchmark.data.proxy_mos import METRICS, metric_scores, proxy_mos
from benchmark.data.scales import DatasetInfo

logger = logging.getLogger(__name__)

RECIPE_VERSION = 2
MOS_SCALE = (1.0, 5.0)
MIN_CROP = 32
_PIXEL_LIBRARIES = ("pillow", "numpy", "scipy", "scikit-image", "torch", "piq")


DEFAULT_DISTORTIONS: tuple[str, ...] = (
    "gaussian_blur", "motion_blur", "gaussian_noise", "jpeg", "jpeg2000", "contrast", "darken", "desaturate",
    "pixelate", "quantize",
)


@dataclass(frozen=True)
class BundledRecipe:
    """Parameters of the embedded dataset; equal recipes give identical images and labels.

    Attributes
    ----------
    photos : tuple of str
        Source photographs (names from :data:`~benchmark.data.photos.PHOTO_NAMES`).
    crop_size : int
        Side of each square crop (pixels).
    crop_positions : tuple of (float, float)
        Crop positions as fractions of the free range; crops per photo = their number.
    resize_factor : float
        The shorter side of each photo is resized to ``crop_size * resize_factor`` before cropping.
    distortions : tuple of str
        Distortion types (keys of :data:`~benchmark.data.distortions.DISTORTIONS`).
    levels : tuple of int
        Levels (subset of 1..5).
    seed : int
        Seed of the noise generators.
    """

    photos: tuple[str, ...] = PHOTO_NAMES
    crop_size: int = 256
    crop_positions: tuple[tuple[float, float], ...] = ((0.15, 0.15), (0.5, 0.5), (0.85, 0.85))
    resize_factor: float = 1.5
    distortions: tuple[str, ...] = DEFAULT_DISTORTIONS
    levels: tuple[int, ...] = LEVELS
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [name for name in self.photos if name not in PHOTO_NAMES]
        unknown += [name for name in self.distortions if name not in DISTORTIONS]
        unknown += [str(level) for level in self.levels if level not in LEVELS]
        if unknown:
            raise RecipeError(
                f"recipe names unknown photos/distortions/levels {unknown}; photos: {', '.join(PHOTO_NAMES)}; "
                f"distortions: {', '.join(DISTORTIONS)}; levels: {LEVELS}."
            )
        if not self.photos or not self.crop_positions or not self.distortions or not self.levels:
            raise RecipeError("a recipe needs at least one photo, crop position, distortion and level.")
        if self.resize_factor < 1.0 or self.crop_size < MIN_CROP:
            raise RecipeError(
                f"need resize_factor >= 1 and crop_size >= {MIN_CROP} (the metrics' minimum), "
                f"got resize_factor={self.resize_factor}, crop_size={self.crop_size}."
            )

    @property
    def n_rows(self) -> int:
        """Number of images the recipe produces."""
        return len(self.photos) * len(self.crop_positions) * len(self.distortions) * len(self.levels)

    def key(self) -> str:
        """Hash of the recipe, :data:`RECIPE_VERSION` and the pixel/metric library versions."""
        libraries = {name: version(name) for name in _PIXEL_LIBRARIES}
        return stable_hash({"recipe": asdict(self), "version": RECIPE_VERSION, "libraries": libraries})[:16]


DEFAULT_RECIPE = BundledRecipe()


def bundled_info(recipe: BundledRecipe = DEFAULT_RECIPE) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of a recipe (no build needed)."""
    return DatasetInfo("bundled", *MOS_SCALE, higher_is_better=True, synthetic=True, n_rows=recipe.n_rows)


def _noise_rng(recipe: BundledRecipe, photo: str, crop: int, distortion: str, level: int) -> np.random.Generator:
    """Generator seeded by the recipe seed and the image's identity (independent of build order)."""
    identity = zlib.crc32(f"{photo}/{crop}/{distortion}/{level}".encode())
    return np.random.default_rng([recipe.seed, identity])


def _build_crop(task: tuple[BundledRecipe, str, int, Path]) -> list[dict[str, object]]:
    """Write every distorted version of one crop of one photo and return their label rows."""
    recipe, photo, crop_index, images = task
    position = recipe.crop_positions[crop_index]
    crop = fixed_crops(load_photo(photo), recipe.crop_size, [position], recipe.resize_factor)[0]
    arrays, keys = [], []
    for distortion in recipe.distortions:
        for level in recipe.levels:
            rng = _noise_rng(recipe, photo, crop_index, distortion, level)
            array = as_array(apply_distortion(crop, distortion, level, rng))
            name = f"{photo}_c{crop_index}_{distortion}_l{level}.png"
            _save_png(array, images / name)
            arrays.append(array)
            keys.append((name, distortion, level))
    scores = metric_scores(np.stack(arrays), as_array(crop))
    mos = proxy_mos(scores)
    rows = []
    for index, (name, distortion, level) in enumerate(keys):
        row: dict[str, object] = {"image": name, "mos": mos[index], "ref": f"{photo}_c{crop_index}",
                                  "distortion": distortion}
        row |= {"level": level, "crop": crop_index, "photo": photo}
        row |= {metric: scores[metric][index] for metric in METRICS}
        rows.append(row)
    return rows


def _save_png(array: np.ndarray, path: Path) -> None:
    """Save a uint8 RGB array as a lossless PNG (compress_level=1 trades file size for speed)."""
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _build_into(recipe: BundledRecipe, folder: Path, workers: int) -> pd.DataFrame:
    """Write every image of ``recipe`` under ``folder/images`` and return the label rows in recipe order.

    One task per (photo, crop), run on ``workers`` threads (PIL, numpy and torch release the GIL) with
    torch's own intra-op parallelism set to one thread meanwhile. Each task is self-contained and
    seeded by its identity, so the result does not depend on ``workers``.
    """
    images = folder / "images"
    images.mkdir()
    crops = range(len(recipe.crop_positions))
    tasks = [(recipe, photo, crop, images) for photo in recipe.photos for crop in crops]
    per_task = len(recipe.distortions) * len(recipe.levels)
    rows: list[dict[str, object]] = []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=recipe.n_rows, desc="bundled dataset", unit="img", disable=None) as progress,
        ):
            for task_rows in pool.map(_build_crop, tasks):
                rows += task_rows
                progress.update(per_task)
    finally:
        torch.set_num_threads(torch_threads)
    return pd.DataFrame(rows)


def build_bundled(
    recipe: BundledRecipe = DEFAULT_RECIPE, cache: str | Path | None = None, workers: int | None = None
) -> Path:
    """Build (once) and return the cache folder of a ``bundled`` recipe.

    Parameters
    ----------
    recipe : BundledRecipe
        What to build; :data:`DEFAULT_RECIPE` by default.
    cache : str or Path, optional
        Cache root; :func:`~benchmark.data.cache.cache_root` when None.
    workers : int, optional
        Build threads; None = the number of CPU cores this process may use.

    Returns
    -------
    Path
        ``<cache>/bundled/<recipe key>`` holding ``images/``, ``labels.csv`` and ``recipe.json``.
    """
    folder = Path(cache if cache is not None else cache_root()) / "bundled" / recipe.key()
    if (folder / "labels.csv").is_file():
        return folder
    logger.info("building bundled dataset (%d images) into %s", recipe.n_rows, folder)
    start = time.perf_counter()
    if workers is None:
        workers = len(os.sched_getaffinity(0))
    n_tasks = len(recipe.photos) * len(recipe.crop_positions)
    with atomic_directory(folder) as temp:
        labels = _build_into(recipe, temp, min(workers, n_tasks))
        labels.round(6).to_csv(temp / "labels.csv", index=False)
        (temp / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    logger.info("built bundled dataset in %.1f s", time.perf_counter() - start)
    return folder


def load_bundled(
    recipe: BundledRecipe = DEFAULT_RECIPE, cache: str | Path | None = None, workers: int | None = None
) -> pd.DataFrame:
    """Return the label table of a ``bundled`` recipe, building it first when not cached.

    Parameters
    ----------
    recipe : BundledRecipe
        What to load; :data:`DEFAULT_RECIPE` by default.
    cache : str or Path, optional
        Cache root; :func:`~benchmark.data.cache.cache_root` when None.
    workers : int, optional
        Build threads when a build is needed (see :func:`build_bundled`).

    Returns
    -------
    pandas.DataFrame
        Columns ``image, mos, u, ref, distortion, level, crop`` plus the raw metric columns.
    """
    folder = build_bundled(recipe, cache, workers)
    source = str(folder / "labels.csv")
    table = pd.read_csv(folder / "labels.csv", dtype={"image": str, "ref": str, "distortion": str})
    mos = parse_scores(table["mos"], source)
    check_scale(mos, source, *MOS_SCALE)
    check_unique(table["image"].tolist(), source)
    layout = f"{folder}/images/<photo>_c<crop>_<distortion>_l<level>.png; delete {folder} to rebuild it"
    images = locate_images([[folder / "images" / name for name in table["image"]]], "bundled", layout)
    extra = {column: table[column].tolist() for column in ("level", "crop", "photo", *METRICS)}
    return assemble(images, mos, table["ref"].tolist(), table["distortion"].tolist(), bundled_info(recipe), extra)
