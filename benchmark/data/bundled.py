"""The embedded default dataset ``bundled``: offline, deterministic, built once and cached.

Its labels are a PROXY, not human opinion: a fixed ensemble of full-reference metrics
(:mod:`benchmark.data.proxy_mos`) scores each distorted crop against its pristine crop, mapped to 1-5.

Recipe (:class:`BundledRecipe`, default :data:`DEFAULT_RECIPE`): the 19 natural photographs shipped
inside installed packages, forming 18 scenes (:mod:`benchmark.data.photos`; the two motorcycle views
are one scene). Each photo is resized so its shorter side is at most 512 px and the 2 most detailed
of its non-overlapping 256 x 256 windows are kept per scene (one per view for the motorcycle; chelsea
and coins fit only one window): 34 crops. Every crop is degraded by 10 of the distortion types of
:mod:`benchmark.data.distortions` (:data:`DEFAULT_DISTORTIONS`) at 5 levels: 34 x 10 x 5 = 1700 images.
Seven photos are grayscale (brick, camera, cell, coins, grass, gravel, moon) and come as RGB with three
equal channels; ``desaturate`` leaves them unchanged, so its images of their 13 crops (13 x 5 = 65
images) get the top proxy MOS, 5 (to 5 decimals); they are kept as they are.
Noise is drawn from a generator seeded by (recipe seed, scene, crop, distortion, level), so the same
recipe gives identical pixels and labels. Images are stored as lossless PNG (compressed ones carry
their decoded codec artefacts).

``ref`` is the scene: all crops of a photograph (of both motorcycle views), with all their distorted
versions, form one content group, as real datasets group by reference image, so a split never puts
content of one photograph on both sides. The 18 groups hold 100 images each (50 for chelsea and
coins); a 60/20/20 split (:func:`~benchmark.data.splits.make_split`) tests on 3-4 scenes (300-350
images) and trains on 10-11. Crops of one photo never overlap.
Columns beyond the standard ones: ``level`` (1-5), ``crop`` (index within the scene), ``photo`` (the
source photograph, a name from :data:`~benchmark.data.photos.PHOTO_NAMES`), ``crop_top`` and
``crop_left`` (position in the resized photo, pixels), ``crop_scale`` (its resize factor) and the
raw metric values.

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
from benchmark.data.photos import SCENE_NAMES, SceneCrop, as_array, scene_crop_count, scene_crops
from benchmark.data.proxy_mos import METRICS, metric_scores, proxy_mos
from benchmark.data.scales import DatasetInfo

logger = logging.getLogger(__name__)

RECIPE_VERSION = 3
MOS_SCALE = (1.0, 5.0)
MIN_CROP = 32
LABELS_FILE = "labels.csv"
_PIXEL_LIBRARIES = ("pillow", "numpy", "scipy", "scikit-image", "torch", "piq")
_SOURCE_COLUMNS = ("level", "crop", "photo", "crop_top", "crop_left", "crop_scale")


DEFAULT_DISTORTIONS: tuple[str, ...] = (
    "gaussian_blur", "motion_blur", "gaussian_noise", "jpeg", "jpeg2000", "contrast", "darken", "desaturate",
    "pixelate", "quantize",
)


@dataclass(frozen=True)
class BundledRecipe:
    """Parameters of the embedded dataset; equal recipes give identical images and labels.

    Attributes
    ----------
    scenes : tuple of str
        Source scenes, the content groups (names from :data:`~benchmark.data.photos.SCENE_NAMES`).
    crop_size : int
        Side of each square crop (pixels).
    max_shorter : int
        Each photo's shorter side is resized down to at most this many pixels before cropping.
    crops_per_scene : int
        Non-overlapping crops kept per scene (fewer where the photos hold fewer windows).
    distortions : tuple of str
        Distortion types (keys of :data:`~benchmark.data.distortions.DISTORTIONS`).
    levels : tuple of int
        Levels (subset of 1..5).
    seed : int
        Seed of the noise generators.
    """

    scenes: tuple[str, ...] = SCENE_NAMES
    crop_size: int = 256
    max_shorter: int = 512
    crops_per_scene: int = 2
    distortions: tuple[str, ...] = DEFAULT_DISTORTIONS
    levels: tuple[int, ...] = LEVELS
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [name for name in self.scenes if name not in SCENE_NAMES]
        unknown += [name for name in self.distortions if name not in DISTORTIONS]
        unknown += [str(level) for level in self.levels if level not in LEVELS]
        if unknown:
            raise RecipeError(
                f"recipe names unknown scenes/distortions/levels {unknown}; scenes: {', '.join(SCENE_NAMES)}; "
                f"distortions: {', '.join(DISTORTIONS)}; levels: {LEVELS}."
            )
        if not self.scenes or not self.distortions or not self.levels or self.crops_per_scene < 1:
            raise RecipeError("a recipe needs at least one scene, distortion and level, and crops_per_scene >= 1.")
        if any(len(set(names)) != len(names) for names in (self.scenes, self.distortions, self.levels)):
            raise RecipeError(f"a recipe lists a scene, distortion or level twice: {self.scenes}, "
                              f"{self.distortions}, {self.levels}.")
        if not MIN_CROP <= self.crop_size <= self.max_shorter:
            raise RecipeError(
                f"need {MIN_CROP} <= crop_size <= max_shorter ({MIN_CROP} px is the metrics' minimum), "
                f"got crop_size={self.crop_size}, max_shorter={self.max_shorter}."
            )
        empty = [scene for scene, count in self.crop_counts.items() if count == 0]
        if empty:
            raise RecipeError(f"scenes {empty} are smaller than crop_size={self.crop_size}; drop them or "
                              "choose a smaller crop_size.")

    @property
    def crop_counts(self) -> dict[str, int]:
        """Crops per scene, from the photos' headers (no pixels decoded)."""
        return {scene: scene_crop_count(scene, self.crop_size, self.max_shorter, self.crops_per_scene)
                for scene in self.scenes}

    @property
    def n_rows(self) -> int:
        """Number of images the recipe produces."""
        return sum(self.crop_counts.values()) * len(self.distortions) * len(self.levels)

    def key(self) -> str:
        """Hash of the recipe, :data:`RECIPE_VERSION` and the pixel/metric library versions."""
        libraries = {name: version(name) for name in _PIXEL_LIBRARIES}
        return stable_hash({"recipe": asdict(self), "version": RECIPE_VERSION, "libraries": libraries})[:16]


DEFAULT_RECIPE = BundledRecipe()


def bundled_info(recipe: BundledRecipe = DEFAULT_RECIPE) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of a recipe (no build needed)."""
    return DatasetInfo("bundled", *MOS_SCALE, higher_is_better=True, synthetic=True, n_rows=recipe.n_rows)


def _noise_rng(recipe: BundledRecipe, scene: str, crop: int, distortion: str, level: int) -> np.random.Generator:
    """Generator seeded by the recipe seed and the image's identity (independent of build order)."""
    identity = zlib.crc32(f"{scene}/{crop}/{distortion}/{level}".encode())
    return np.random.default_rng([recipe.seed, identity])


def _distort_crop(recipe: BundledRecipe, crop: SceneCrop, images: Path) -> list[dict[str, object]]:
    """Write every distorted version of one crop and return their label rows."""
    pristine = Image.fromarray(crop.pixels)
    arrays, keys = [], []
    for distortion in recipe.distortions:
        for level in recipe.levels:
            rng = _noise_rng(recipe, crop.scene, crop.index, distortion, level)
            array = as_array(apply_distortion(pristine, distortion, level, rng))
            name = f"{crop.scene}_c{crop.index}_{distortion}_l{level}.png"
            _save_png(array, images / name)
            arrays.append(array)
            keys.append((name, distortion, level))
    scores = metric_scores(np.stack(arrays), crop.pixels)
    mos = proxy_mos(scores)
    source = {"crop": crop.index, "photo": crop.photo, "crop_top": crop.top, "crop_left": crop.left,
              "crop_scale": crop.scale}
    rows = []
    for index, (name, distortion, level) in enumerate(keys):
        row: dict[str, object] = {"image": name, "mos": mos[index], "ref": crop.scene, "distortion": distortion}
        row |= {"level": level, **source}
        row |= {metric: scores[metric][index] for metric in METRICS}
        rows.append(row)
    return rows


def _build_scene(task: tuple[BundledRecipe, str, Path]) -> list[dict[str, object]]:
    """Cut the crops of one scene, write all their distorted versions and return their label rows."""
    recipe, scene, images = task
    rows: list[dict[str, object]] = []
    for crop in scene_crops(scene, recipe.crop_size, recipe.max_shorter, recipe.crops_per_scene):
        rows += _distort_crop(recipe, crop, images)
    return rows


def _save_png(array: np.ndarray, path: Path) -> None:
    """Save a uint8 RGB array as a lossless PNG (compress_level=1 trades file size for speed)."""
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _build_into(recipe: BundledRecipe, folder: Path, workers: int) -> pd.DataFrame:
    """Write every image of ``recipe`` under ``folder/images`` and return the label rows in recipe order.

    One task per scene, run on ``workers`` threads (PIL, numpy and torch release the GIL) with
    torch's own intra-op parallelism set to one thread meanwhile. Each task is self-contained and
    seeded by its identity, so the result does not depend on ``workers``.
    """
    images = folder / "images"
    images.mkdir()
    tasks = [(recipe, scene, images) for scene in recipe.scenes]
    rows: list[dict[str, object]] = []
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=recipe.n_rows, desc="bundled dataset", unit="img", disable=None) as progress,
        ):
            for task_rows in pool.map(_build_scene, tasks):
                rows += task_rows
                progress.update(len(task_rows))
    finally:
        torch.set_num_threads(torch_threads)
    return pd.DataFrame(rows)


def bundled_folder(recipe: BundledRecipe = DEFAULT_RECIPE, cache: str | Path | None = None) -> Path:
    """Return the cache folder a recipe is (or would be) built into; nothing is created or read.

    Parameters
    ----------
    recipe : BundledRecipe
        The recipe; :data:`DEFAULT_RECIPE` by default.
    cache : str or Path, optional
        Cache root; :func:`~benchmark.data.cache.cache_root` when None.
    """
    return Path(cache if cache is not None else cache_root()) / "bundled" / recipe.key()


def bundled_is_built(recipe: BundledRecipe = DEFAULT_RECIPE, cache: str | Path | None = None) -> bool:
    """Whether a recipe's build is complete in the cache, WITHOUT building anything (for dry runs).

    A build publishes its folder only when complete, so a folder holding ``labels.csv`` is a finished
    build; the row count needs no build either: ``recipe.n_rows`` (read from the photos' headers).

    Parameters
    ----------
    recipe : BundledRecipe
        The recipe; :data:`DEFAULT_RECIPE` by default.
    cache : str or Path, optional
        Cache root; :func:`~benchmark.data.cache.cache_root` when None.
    """
    return (bundled_folder(recipe, cache) / LABELS_FILE).is_file()


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
    folder = bundled_folder(recipe, cache)
    if bundled_is_built(recipe, cache):
        return folder
    logger.info("building bundled dataset (%d images) into %s", recipe.n_rows, folder)
    start = time.perf_counter()
    if workers is None:
        workers = len(os.sched_getaffinity(0))
    with atomic_directory(folder) as temp:
        labels = _build_into(recipe, temp, min(workers, len(recipe.scenes)))
        labels.round(6).to_csv(temp / LABELS_FILE, index=False)
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
        Columns ``image, mos, u, ref, distortion``, then ``level, crop, photo, crop_top, crop_left,
        crop_scale`` and the raw metric columns.
    """
    folder = build_bundled(recipe, cache, workers)
    source = str(folder / LABELS_FILE)
    table = pd.read_csv(folder / LABELS_FILE, dtype={"image": str, "ref": str, "distortion": str, "photo": str})
    mos = parse_scores(table["mos"], source)
    check_scale(mos, source, *MOS_SCALE)
    check_unique(table["image"].tolist(), source)
    layout = f"{folder}/images/<scene>_c<crop>_<distortion>_l<level>.png; delete {folder} to rebuild it"
    images = locate_images([[folder / "images" / name for name in table["image"]]], "bundled", layout)
    extra = {column: table[column].tolist() for column in (*_SOURCE_COLUMNS, *METRICS)}
    return assemble(images, mos, table["ref"].tolist(), table["distortion"].tolist(), bundled_info(recipe), extra)
