"""Deterministic distortions for the embedded ``bundled`` dataset, five levels each (1 mild .. 5 severe).

Every distortion is a function ``(image, parameter, rng) -> image`` on RGB PIL images; the parameter of
each level is listed in :data:`DISTORTIONS`. Random ones (noise) draw only from the ``rng`` they are
given, so a seeded generator gives identical pixels. Compressions (JPEG, JPEG 2000) are encoded and
decoded again, so the returned pixels carry the codec's artefacts.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy.ndimage import uniform_filter1d
from skimage.util import random_noise

from benchmark.data.errors import RecipeError

Distortion = Callable[[Image.Image, float, np.random.Generator], Image.Image]


def _from_unit(array: np.ndarray) -> Image.Image:
    """Convert a float image in [0, 1] to an RGB PIL image (rounded to the nearest level)."""
    return Image.fromarray(np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8))


def gaussian_blur(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma`` pixels."""
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def motion_blur(image: Image.Image, length: float, rng: np.random.Generator) -> Image.Image:
    """Horizontal linear motion blur: a box filter of ``length`` pixels along the rows."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return _from_unit(uniform_filter1d(array, size=int(length), axis=1, mode="reflect"))


def gaussian_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    """Additive white Gaussian noise, standard deviation ``sigma`` on the [0, 1] scale, per channel."""
    return _from_unit(random_noise(np.asarray(image), mode="gaussian", rng=rng, var=sigma**2))


def impulse_noise(image: Image.Image, amount: float, rng: np.random.Generator) -> Image.Image:
    """Salt-and-pepper noise replacing a fraction ``amount`` of the channel values."""
    return _from_unit(random_noise(np.asarray(image), mode="s&p", rng=rng, amount=amount))


def _round_trip(image: Image.Image, **save_args: object) -> Image.Image:
    """Encode with PIL and decode again, returning the decoded RGB pixels."""
    buffer = io.BytesIO()
    image.save(buffer, **save_args)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def jpeg(image: Image.Image, quality: float, rng: np.random.Generator) -> Image.Image:
    """JPEG compression at PIL ``quality`` (1-95)."""
    return _round_trip(image, format="JPEG", quality=int(quality))


def jpeg2000(image: Image.Image, ratio: float, rng: np.random.Generator) -> Image.Image:
    """JPEG 2000 compression (OpenJPEG through PIL) at compression ratio ``ratio``:1."""
    return _round_trip(image, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)])


def contrast(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Contrast reduction towards the mean grey (``ImageEnhance.Contrast``, factor < 1)."""
    return ImageEnhance.Contrast(image).enhance(factor)


def brightness(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Brightness scaling (``ImageEnhance.Brightness``): factor < 1 darkens, > 1 brightens and clips."""
    return ImageEnhance.Brightness(image).enhance(factor)


def desaturate(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    """Saturation reduction towards grey (``ImageEnhance.Color``, 0 = greyscale)."""
    return ImageEnhance.Color(image).enhance(factor)


def pixelate(image: Image.Image, block: float, rng: np.random.Generator) -> Image.Image:
    """Pixelation: box-downsample by ``block`` and upsample with nearest neighbour."""
    small = (max(1, image.width // int(block)), max(1, image.height // int(block)))
    return image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.NEAREST)


def quantize(image: Image.Image, colors: float, rng: np.random.Generator) -> Image.Image:
    """Colour quantisation to ``colors`` palette entries (fast octree, no dithering)."""
    palette = image.quantize(colors=int(colors), method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    return palette.convert("RGB")


# name -> (function, parameter of levels 1..5)
DISTORTIONS: dict[str, tuple[Distortion, tuple[float, ...]]] = {
    "gaussian_blur": (gaussian_blur, (0.7, 1.3, 2.2, 3.5, 5.5)),
    "motion_blur": (motion_blur, (3, 6, 10, 15, 23)),
    "gaussian_noise": (gaussian_noise, (0.02, 0.04, 0.07, 0.11, 0.17)),
    "impulse_noise": (impulse_noise, (0.005, 0.015, 0.035, 0.07, 0.13)),
    "jpeg": (jpeg, (45, 25, 14, 8, 3)),
    "jpeg2000": (jpeg2000, (24, 48, 96, 192, 400)),
    "contrast": (contrast, (0.75, 0.55, 0.4, 0.27, 0.16)),
    "darken": (brightness, (0.8, 0.64, 0.5, 0.37, 0.25)),
    "brighten": (brightness, (1.2, 1.45, 1.75, 2.1, 2.6)),
    "desaturate": (desaturate, (0.7, 0.5, 0.3, 0.15, 0.0)),
    "pixelate": (pixelate, (3, 4, 6, 8, 12)),
    "quantize": (quantize, (48, 24, 12, 6, 3)),
}

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)


def apply_distortion(image: Image.Image, name: str, level: int, rng: np.random.Generator) -> Image.Image:
    """Apply distortion ``name`` at ``level`` (1..5) to an RGB image.

    Raises
    ------
    RecipeError
        For an unknown distortion name or level.
    """
    if name not in DISTORTIONS:
        raise RecipeError(f"unknown distortion {name!r}; choose from {', '.join(DISTORTIONS)}.")
    if level not in LEVELS:
        raise RecipeError(f"distortion level {level!r} is not one of {LEVELS}.")
    function, parameters = DISTORTIONS[name]
    return function(image, parameters[level - 1], rng)
