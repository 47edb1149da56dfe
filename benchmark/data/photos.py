"""Natural photographs shipped inside installed packages (no network), grouped by scene, and their crops.

Sources, read as package files (never through a downloader): scikit-image's ``data/`` folder,
scikit-learn's sample images and matplotlib's sample data. 19 photographs form 18 scenes (content
groups): scikit-image's ``motorcycle_left`` and ``motorcycle_right`` are two views of one scene.
Grayscale photographs are converted to RGB with three equal channels.

Left out on purpose:

- synthetic images, not photographs: ``chessboard_GRAY``, ``chessboard_RGB``, ``color``, ``logo``,
  ``phantom`` and the ``horse`` silhouette;
- images too small for a 256 x 256 crop: ``page`` (384 x 191), ``text`` (448 x 172),
  ``microaneurysms`` (102 x 102), ``lfw_subset`` (25 x 25 faces), ``multipage.tif`` and
  ``multipage_rgb.tif`` (10 x 15, 10 x 10) and ``no_time_for_that_tiny.gif`` (14 x 25);
- ``clock_motion``: already motion-blurred, so not a pristine reference.

Crops: each photo is resized so its shorter side is at most ``max_shorter`` (bicubic, antialiased;
never upscaled), the grid of non-overlapping square windows that fits is laid out centred, and the
windows with the most detail (mean Sobel gradient magnitude of the luminance; ties go to the earlier
window in row-major order) are kept. A scene's crops are shared out over its photos (one per view
for ``motorcycle`` at two crops per scene), so crops of one photo never overlap and every photo
belongs to exactly one scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import BinaryIO

import numpy as np
from PIL import Image
from skimage.color import rgb2gray
from skimage.filters import sobel

from benchmark.data.errors import RecipeError

_SKIMAGE = "skimage.data"
_SKLEARN = "sklearn.datasets"
_MATPLOTLIB = "matplotlib"

# photo name -> (package, file path inside it); the module docstring lists the images left out and why
_FILES: dict[str, tuple[str, str]] = {
    "astronaut": (_SKIMAGE, "astronaut.png"),
    "chelsea": (_SKIMAGE, "chelsea.png"),
    "coffee": (_SKIMAGE, "coffee.png"),
    "rocket": (_SKIMAGE, "rocket.jpg"),
    "hubble_deep_field": (_SKIMAGE, "hubble_deep_field.jpg"),
    "retina": (_SKIMAGE, "retina.jpg"),
    "ihc": (_SKIMAGE, "ihc.png"),
    "motorcycle_left": (_SKIMAGE, "motorcycle_left.png"),
    "motorcycle_right": (_SKIMAGE, "motorcycle_right.png"),
    "brick": (_SKIMAGE, "brick.png"),
    "camera": (_SKIMAGE, "camera.png"),
    "cell": (_SKIMAGE, "cell.png"),
    "coins": (_SKIMAGE, "coins.png"),
    "grass": (_SKIMAGE, "grass.png"),
    "gravel": (_SKIMAGE, "gravel.png"),
    "moon": (_SKIMAGE, "moon.png"),
    "china": (_SKLEARN, "images/china.jpg"),
    "flower": (_SKLEARN, "images/flower.jpg"),
    "grace_hopper": (_MATPLOTLIB, "mpl-data/sample_data/grace_hopper.jpg"),
}

PHOTO_NAMES: tuple[str, ...] = tuple(_FILES)

# photos that are views of a shared scene; every other photo is a scene of its own
_SHARED_SCENE = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}


def _group_scenes(photos: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Map each scene to its photos, scenes ordered by their first photo."""
    scenes: dict[str, list[str]] = {}
    for photo in photos:
        scenes.setdefault(_SHARED_SCENE.get(photo, photo), []).append(photo)
    return {scene: tuple(members) for scene, members in scenes.items()}


#: scene (content group) -> its photographs
SCENES: dict[str, tuple[str, ...]] = _group_scenes(PHOTO_NAMES)
SCENE_NAMES: tuple[str, ...] = tuple(SCENES)


@dataclass(frozen=True, eq=False)
class SceneCrop:
    """One square crop of a scene.

    Attributes
    ----------
    scene : str
        Content group (a key of :data:`SCENES`).
    index : int
        Index of the crop within its scene.
    photo : str
        Source photograph (a name from :data:`PHOTO_NAMES`).
    top, left : int
        Position of the crop in the resized photograph's pixel coordinates.
    scale : float
        Resize factor of the photograph (resized shorter side / native shorter side; 1 = native).
    pixels : numpy.ndarray
        uint8 RGB array [size, size, 3].
    """

    scene: str
    index: int
    photo: str
    top: int
    left: int
    scale: float
    pixels: np.ndarray


def _open(name: str) -> BinaryIO:
    """Open the package file of a photograph for binary reading."""
    if name not in _FILES:
        raise RecipeError(f"unknown bundled photo {name!r}; choose from {', '.join(PHOTO_NAMES)}.")
    package, path = _FILES[name]
    return resources.files(package).joinpath(path).open("rb")


@cache
def photo_size(name: str) -> tuple[int, int]:
    """Return the native ``(width, height)`` of a photograph, reading only its header.

    Raises
    ------
    RecipeError
        For an unknown name.
    """
    with _open(name) as handle, Image.open(handle) as image:
        return image.size


def load_photo(name: str) -> Image.Image:
    """Load one bundled photograph as an RGB PIL image (grayscale ones get three equal channels).

    Parameters
    ----------
    name : str
        One of :data:`PHOTO_NAMES`.

    Raises
    ------
    RecipeError
        For an unknown name.
    """
    with _open(name) as handle, Image.open(handle) as image:
        return image.convert("RGB")


def fitted_size(size: tuple[int, int], max_shorter: int) -> tuple[tuple[int, int], float]:
    """Size of a photo whose shorter side is brought down to at most ``max_shorter`` (never up).

    Parameters
    ----------
    size : (int, int)
        Native ``(width, height)``.
    max_shorter : int
        Largest allowed shorter side.

    Returns
    -------
    ((int, int), float)
        The resized ``(width, height)`` (longer side rounded) and the resize factor (<= 1).

    Examples
    --------
    >>> fitted_size((1000, 872), 512)
    ((587, 512), 0.5871559633027523)
    >>> fitted_size((741, 500), 512)
    ((741, 500), 1.0)
    """
    shorter = min(size)
    if shorter <= max_shorter:
        return size, 1.0
    scale = max_shorter / shorter
    return (round(size[0] * scale), round(size[1] * scale)), scale


def resize_photo(image: Image.Image, max_shorter: int) -> tuple[Image.Image, float]:
    """Resize with :func:`fitted_size` (bicubic; PIL widens the kernel when reducing, i.e. antialiases).

    Returns
    -------
    (PIL.Image.Image, float)
        The resized image (the input itself when no resize is needed) and the resize factor.
    """
    size, scale = fitted_size(image.size, max_shorter)
    if scale == 1.0:
        return image, scale
    return image.resize(size, Image.Resampling.BICUBIC), scale


def window_grid(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners ``(top, left)`` of the non-overlapping ``size`` windows that fit, centred.

    Windows are listed in row-major order; the leftover margin is split evenly (the extra pixel of
    an odd margin goes to the right / bottom).

    Examples
    --------
    >>> window_grid(741, 500, 256)
    [(122, 114), (122, 370)]
    >>> window_grid(200, 200, 256)
    []
    """
    rows, cols = height // size, width // size
    top0, left0 = (height - rows * size) // 2, (width - cols * size) // 2
    return [(top0 + row * size, left0 + col * size) for row in range(rows) for col in range(cols)]


def view_quotas(n_views: int, crops: int) -> list[int]:
    """Share ``crops`` crops of a scene over its ``n_views`` photos, earlier views first.

    Examples
    --------
    >>> view_quotas(2, 2), view_quotas(2, 3), view_quotas(1, 2)
    ([1, 1], [2, 1], [2])
    """
    return [crops // n_views + (1 if view < crops % n_views else 0) for view in range(n_views)]


def detail_scores(image: np.ndarray, windows: list[tuple[int, int]], size: int) -> np.ndarray:
    """Mean Sobel gradient magnitude of the luminance inside each window.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 RGB array [H, W, 3].
    windows : list of (int, int)
        Top-left corners ``(top, left)``.
    size : int
        Window side.

    Returns
    -------
    numpy.ndarray
        float64 array, one score per window.
    """
    gradient = sobel(rgb2gray(image))
    return np.array([gradient[top : top + size, left : left + size].mean() for top, left in windows])


def most_detailed(scores: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` highest scores (ties: lower index first), in increasing index order.

    Examples
    --------
    >>> most_detailed(np.array([0.1, 0.3, 0.3, 0.2]), 2)
    [1, 2]
    """
    ranked = sorted(range(len(scores)), key=lambda index: (-scores[index], index))
    return sorted(ranked[:count])


def _check_scene(scene: str) -> tuple[str, ...]:
    """Return the photos of a scene, or raise RecipeError for an unknown scene."""
    if scene not in SCENES:
        raise RecipeError(f"unknown bundled scene {scene!r}; choose from {', '.join(SCENE_NAMES)}.")
    return SCENES[scene]


def scene_crop_count(scene: str, crop_size: int, max_shorter: int, crops_per_scene: int) -> int:
    """Number of crops :func:`scene_crops` gives for a scene, from the photos' headers only."""
    photos = _check_scene(scene)
    count = 0
    for photo, quota in zip(photos, view_quotas(len(photos), crops_per_scene)):
        (width, height), _ = fitted_size(photo_size(photo), max_shorter)
        count += min(quota, len(window_grid(width, height, crop_size)))
    return count


def scene_crops(scene: str, crop_size: int, max_shorter: int, crops_per_scene: int) -> list[SceneCrop]:
    """Cut the most detailed non-overlapping crops of a scene (see the module docstring).

    Parameters
    ----------
    scene : str
        A key of :data:`SCENES`.
    crop_size : int
        Side of each square crop (pixels).
    max_shorter : int
        Each photo's shorter side is resized to at most this many pixels first.
    crops_per_scene : int
        Crops wanted; shared out over the scene's photos by :func:`view_quotas`. A photo with fewer
        windows than its share gives all its windows.

    Returns
    -------
    list of SceneCrop
        In photo order, then row-major window order; indices 0, 1, ...
    """
    crops: list[SceneCrop] = []
    photos = _check_scene(scene)
    for photo, quota in zip(photos, view_quotas(len(photos), crops_per_scene)):
        resized, scale = resize_photo(load_photo(photo), max_shorter)
        array = np.asarray(resized, dtype=np.uint8)
        windows = window_grid(resized.width, resized.height, crop_size)
        for window in most_detailed(detail_scores(array, windows, crop_size), quota):
            top, left = windows[window]
            pixels = np.ascontiguousarray(array[top : top + crop_size, left : left + crop_size])
            crops.append(SceneCrop(scene, len(crops), photo, top, left, scale, pixels))
    return crops


def as_array(image: Image.Image) -> np.ndarray:
    """Return an RGB PIL image as a C-contiguous uint8 array [H, W, 3]."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
