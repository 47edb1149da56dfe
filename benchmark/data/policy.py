"""Per-dataset image policies: the resolution images are stored at and how many patches are drawn.

An :class:`ImagePolicy` has three parts:

* ``resize`` — the resolution the store (:mod:`benchmark.data.patch_store`) decodes each image to once:

  - ``"native"``: the file's own pixels, untouched;
  - ``(W, H)``: exactly ``W x H`` (bicubic, antialiased), upscaling and aspect change included — for
    datasets whose images share one size, such as KonIQ-10k's 1024 x 768 photos;
  - ``ShorterSide(N)`` (YAML ``{shorter: N}``): shorter side to ``N``, aspect kept. Images whose shorter
    side is already <= N are kept native: **never upscaled**, since interpolation blurs, which is itself
    a distortion and would change what a pixel means from one image to the next;
  - ``"imagenet"``: the classification preprocessing, kept so its cost can be measured: shorter side
    to ``round(patch / crop_pct)`` then the centre square (:func:`~benchmark.data.images.decode_image`);
    with one test patch, the centre one, the model sees exactly the classic resize + centre crop.

* ``train_patches`` — random patch + flip draws per image per epoch (default 1; HyperIQA draws 25).
* ``test_patches`` — patches whose predictions are averaged into an image's score (default 25, a
  regular grid over the whole image, see :func:`~benchmark.data.patches.test_patch_positions`;
  ``imagenet`` defaults to 1, the centre patch).

The patch side is the backbone's input size; it is a parameter of the store and patch functions, not
of the policy, so one policy serves every backbone.

Literature defaults (:data:`DATASET_POLICIES`; anything else, custom CSV datasets included, is native with
1 train and 25 test patches unless its YAML declares ``image_policy``):

==========  =================  =====  ====  ==============================================
dataset     resize             train  test  why
==========  =================  =====  ====  ==============================================
koniq10k    512 x 384          1      25    the authors' 512 x 384 release (KonCept512)
spaq        shorter side 512   1      25    the SPAQ paper (phone photos ~4000 x 3000)
live        native             1      25    mostly 768 x 512, a few smaller
csiq        native             1      25    512 x 512
tid2013     native             1      25    512 x 384
kadid10k    native             1      25    512 x 384
livec       native             1      25    500 x 500
bundled     native             1      1     256 x 256, see below
==========  =================  =====  ====  ==============================================

``bundled`` scores one centre test patch: a 224 patch covers 77 % of a 256 x 256 image, every bundled
distortion is applied uniformly over the whole image (more patches would average content, not
quality), and for efficientnet_lite0 (224, crop_pct 0.875 -> 256) the native centre patch is the exact
pixel set the ``imagenet`` policy gives, so the offline default grid keeps its cost and its results.
``{test_patches: 5}`` takes the centre and the four corners (every pixel covered) when wanted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from benchmark.data.errors import ImagePolicyError

NATIVE = "native"
IMAGENET = "imagenet"
DEFAULT_CROP_PCT = 0.875  # timm's default crop_pct, used when a backbone declares none
DEFAULT_TEST_PATCHES = 25
POLICY_KEYS = ("resize", "train_patches", "test_patches")
_RESIZE_ALLOWED = "'native', 'imagenet', [width, height] (positive integers) or {shorter: N} (positive integer)"
_COUNT_ALLOWED = "an integer >= 1"


def grid_side(count: int) -> int:
    """Side of the square grid test patches are taken from: ``ceil(sqrt(count))``."""
    return math.isqrt(count - 1) + 1


@dataclass(frozen=True)
class ShorterSide:
    """Resize so that the shorter side is ``pixels`` (aspect kept, never upscaled)."""

    pixels: int


Resize = str | tuple[int, int] | ShorterSide


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _resize_value(value: object, where: str) -> Resize:
    """Normalise a resize given as in YAML (list, mapping) or in Python; raise naming ``where``."""
    if isinstance(value, str) and value in (NATIVE, IMAGENET):
        return value
    if isinstance(value, ShorterSide) and _positive_int(value.pixels):
        return value
    if isinstance(value, Mapping) and set(value) == {"shorter"} and _positive_int(value["shorter"]):
        return ShorterSide(value["shorter"])
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_positive_int(side) for side in value):
        return (value[0], value[1])
    raise ImagePolicyError(where, "resize", value, _RESIZE_ALLOWED)


def _count_value(value: object, where: str, key: str) -> int:
    if not _positive_int(value):
        raise ImagePolicyError(where, key, value, _COUNT_ALLOWED)
    return value


@dataclass(frozen=True)
class ImagePolicy:
    """How one dataset's images are stored and patched.

    Attributes
    ----------
    resize : str, (int, int) or ShorterSide
        ``"native"``, ``(width, height)``, ``ShorterSide(N)`` or ``"imagenet"`` (see the module
        docstring). A ``[W, H]`` list or a ``{"shorter": N}`` mapping is accepted and normalised.
    train_patches : int
        Random patches (with random horizontal flip) per image per epoch.
    test_patches : int, optional
        Patches averaged into one test (and validation) score; None gives the resize's default:
        1 (the centre) for ``imagenet``, 25 otherwise. Always an int after construction.

    Raises
    ------
    ImagePolicyError
        For a bad value, naming the field.
    """

    resize: Resize = NATIVE
    train_patches: int = 1
    test_patches: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", _resize_value(self.resize, "ImagePolicy"))
        object.__setattr__(self, "train_patches", _count_value(self.train_patches, "ImagePolicy", "train_patches"))
        if self.test_patches is None:
            object.__setattr__(self, "test_patches", 1 if self.resize == IMAGENET else DEFAULT_TEST_PATCHES)
        object.__setattr__(self, "test_patches", _count_value(self.test_patches, "ImagePolicy", "test_patches"))

    def output_size(self, width: int, height: int, patch: int, crop_pct: float = DEFAULT_CROP_PCT) -> tuple[int, int]:
        """Return the ``(width, height)`` an image of ``width x height`` pixels is stored at.

        Parameters
        ----------
        width, height : int
            The file's size.
        patch : int
            Patch side (the backbone's input size); used by ``imagenet`` only.
        crop_pct : float
            The backbone's crop fraction; used by ``imagenet`` only (side = ``round(patch / crop_pct)``).

        Examples
        --------
        >>> ImagePolicy(ShorterSide(512)).output_size(4000, 3000, 224)
        (683, 512)
        >>> ImagePolicy(ShorterSide(512)).output_size(500, 400, 224)
        (500, 400)
        >>> ImagePolicy("imagenet").output_size(1024, 768, 224)
        (256, 256)
        """
        if self.resize == NATIVE:
            return width, height
        if self.resize == IMAGENET:
            side = round(patch / crop_pct)
            return side, side
        if isinstance(self.resize, ShorterSide):
            scale = self.resize.pixels / min(width, height)
            if scale >= 1.0:
                return width, height
            return max(self.resize.pixels, round(width * scale)), max(self.resize.pixels, round(height * scale))
        return self.resize

    def resize_key(self, patch: int, crop_pct: float = DEFAULT_CROP_PCT) -> object:
        """JSON-serialisable description of what sets the stored pixels (part of the store's cache key)."""
        if self.resize == IMAGENET:
            return [IMAGENET, round(patch / crop_pct)]
        return self.to_mapping()["resize"]

    def to_mapping(self) -> dict[str, object]:
        """The policy as a YAML mapping (``parse_image_policy(policy.to_mapping(), ...) == policy``)."""
        if isinstance(self.resize, ShorterSide):
            resize: object = {"shorter": self.resize.pixels}
        elif isinstance(self.resize, tuple):
            resize = list(self.resize)
        else:
            resize = self.resize
        return {"resize": resize, "train_patches": self.train_patches, "test_patches": self.test_patches}

    def describe(self) -> str:
        """One line for humans, e.g. ``resize 512x384; train 1 random patch+flip/image/epoch; test mean of 25 ...``."""
        if self.resize == NATIVE:
            stored = "native resolution"
        elif self.resize == IMAGENET:
            stored = "imagenet (shorter side to patch/crop_pct, centre square)"
        elif isinstance(self.resize, ShorterSide):
            stored = f"shorter side to {self.resize.pixels} (never upscaled)"
        else:
            stored = f"resize {self.resize[0]}x{self.resize[1]}"
        side = grid_side(self.test_patches)
        if self.test_patches == 1:
            layout = "the centre patch"
        elif self.test_patches == side * side:
            layout = f"a {side}x{side} grid of {self.test_patches} patches"
        else:
            layout = f"{self.test_patches} patches spread over a {side}x{side} grid"
        plural = "es" if self.train_patches > 1 else ""
        return f"{stored}; train {self.train_patches} random patch{plural}+flip/image/epoch; test mean over {layout}"


DATASET_POLICIES: Mapping[str, ImagePolicy] = MappingProxyType({
    "koniq10k": ImagePolicy((512, 384)),
    "spaq": ImagePolicy(ShorterSide(512)),
    "live": ImagePolicy(),
    "csiq": ImagePolicy(),
    "tid2013": ImagePolicy(),
    "kadid10k": ImagePolicy(),
    "livec": ImagePolicy(),
    "bundled": ImagePolicy(NATIVE, test_patches=1),
})


def default_policy(dataset: str) -> ImagePolicy:
    """Return a dataset's literature default (:data:`DATASET_POLICIES`); native for any other name."""
    return DATASET_POLICIES.get(dataset, ImagePolicy())


def parse_image_policy(mapping: Mapping[str, object] | None, where: str,
                       defaults: ImagePolicy | None = None) -> ImagePolicy:
    """Validate a YAML ``image_policy`` mapping; keys it leaves out keep ``defaults``.

    Parameters
    ----------
    mapping : mapping or None
        ``{resize: ..., train_patches: n, test_patches: n}``, any subset; None keeps ``defaults``.
        A mapping that sets ``resize: imagenet`` without ``test_patches`` gets imagenet's 1 test patch.
    where : str
        Where the mapping was read (e.g. ``"grid.yaml: datasets.koniq10k.image_policy"``), for errors.
    defaults : ImagePolicy, optional
        The dataset's policy (:func:`default_policy`); native, 1 train and 25 test patches when None.

    Returns
    -------
    ImagePolicy

    Raises
    ------
    ImagePolicyError
        Naming ``where``, the key, the bad value and what is allowed (unknown keys included).

    Examples
    --------
    >>> parse_image_policy({"test_patches": 9}, "x", default_policy("koniq10k")).to_mapping()
    {'resize': [512, 384], 'train_patches': 1, 'test_patches': 9}
    """
    defaults = defaults or ImagePolicy()
    if mapping is None:
        return defaults
    if not isinstance(mapping, Mapping):
        raise ImagePolicyError(where, "image_policy", mapping, f"a mapping with keys {', '.join(POLICY_KEYS)}")
    for key in mapping:
        if key not in POLICY_KEYS:
            raise ImagePolicyError(where, str(key), mapping[key], f"one of the keys {', '.join(POLICY_KEYS)}")
    fields: dict[str, object] = {}
    if "resize" in mapping:
        fields["resize"] = _resize_value(mapping["resize"], where)
        if fields["resize"] == IMAGENET and "test_patches" not in mapping:
            fields["test_patches"] = None
    for key in ("train_patches", "test_patches"):
        if key in mapping:
            fields[key] = _count_value(mapping[key], where, key)
    return replace(defaults, **fields)
