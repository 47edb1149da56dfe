"""Natural colour photographs shipped inside installed packages (no network), and fixed crops of them.

Sources: scikit-image's ``data/`` folder (read as package files, never through its fetcher),
scikit-learn's sample images and matplotlib's sample data.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
from matplotlib import cbook
from PIL import Image
from sklearn.datasets import load_sample_image

from benchmark.data.errors import RecipeError

_SKIMAGE_FILES = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "ihc": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
}
_SKLEARN_FILES = {"china": "china.jpg", "flower": "flower.jpg"}
_MATPLOTLIB_FILES = {"grace_hopper": "grace_hopper.jpg"}

PHOTO_NAMES: tuple[str, ...] = (*_SKIMAGE_FILES, *_SKLEARN_FILES, *_MATPLOTLIB_FILES)


def load_photo(name: str) -> Image.Image:
    """Load one bundled photograph as an RGB PIL image.

    Parameters
    ----------
    name : str
        One of :data:`PHOTO_NAMES`.

    Raises
    ------
    RecipeError
        For an unknown name.
    """
    if name in _SKIMAGE_FILES:
        with resources.files("skimage.data").joinpath(_SKIMAGE_FILES[name]).open("rb") as handle:
            image = Image.open(handle)
            image.load()
    elif name in _SKLEARN_FILES:
        image = Image.fromarray(load_sample_image(_SKLEARN_FILES[name]))
    elif name in _MATPLOTLIB_FILES:
        with cbook.get_sample_data(_MATPLOTLIB_FILES[name]) as handle:
            image = Image.open(handle)
            image.load()
    else:
        raise RecipeError(f"unknown bundled photo {name!r}; choose from {', '.join(PHOTO_NAMES)}.")
    return image.convert("RGB")


def fixed_crops(
    image: Image.Image, size: int, positions: Sequence[tuple[float, float]], resize_factor: float
) -> list[Image.Image]:
    """Resize the shorter side to ``round(size * resize_factor)`` (bicubic), then cut square crops.

    Parameters
    ----------
    image : PIL.Image.Image
        RGB source photograph.
    size : int
        Side of each square crop in pixels.
    positions : sequence of (float, float)
        Crop positions as fractions ``(fy, fx)`` of the free range: top = round(fy * (H - size)).
    resize_factor : float
        >= 1; ratio of the resized shorter side to the crop size.

    Returns
    -------
    list of PIL.Image.Image
        One ``size x size`` RGB crop per position.
    """
    short = round(size * resize_factor)
    scale = short / min(image.size)
    width, height = max(short, round(image.width * scale)), max(short, round(image.height * scale))
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    crops = []
    for frac_y, frac_x in positions:
        top, left = round(frac_y * (height - size)), round(frac_x * (width - size))
        crops.append(resized.crop((left, top, left + size, top + size)))
    return crops


def as_array(image: Image.Image) -> np.ndarray:
    """Return an RGB PIL image as a C-contiguous uint8 array [H, W, 3]."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
