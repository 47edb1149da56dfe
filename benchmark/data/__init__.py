"""Data layer of the benchmark: label tables, splits, the embedded ``bundled`` dataset and image pipeline.

Public API::

    load_labels(name, root=None) -> DataFrame      # columns image, mos, u, ref, distortion
    load_custom_labels(csv_path, higher_is_better, scale=None, root=None) -> DataFrame
    dataset_info(name) -> DatasetInfo; list_datasets(); mos_to_u(mos, info); u_to_mos(u, info)
    make_split(labels, seed, fractions=(0.6, 0.2, 0.2)) -> {"train", "val", "test"}
    decode_cache(labels, size, cache_dir=None) -> read-only uint8 memmap [N, size, size, 3]
    random_crop_flip(batch, out_size, generator); center_crop(batch, out_size); normalize(x, mean, std)
    find_bad_images(labels) -> [(path, reason)]; cache_root()

The ``bundled`` dataset's labels are a proxy from full-reference metrics, not human opinion.
"""

from benchmark.data.bundled import DEFAULT_RECIPE, BundledRecipe, build_bundled, load_bundled
from benchmark.data.cache import cache_root
from benchmark.data.datasets import dataset_info, image_folder, list_datasets, load_labels, read_label_file
from benchmark.data.errors import (
    CorruptImageError,
    DataError,
    DuplicateImageError,
    InvalidScoreError,
    LabelFileError,
    MissingImagesError,
    RecipeError,
    ScoreOutOfRangeError,
    SplitError,
    UnknownDatasetError,
)
from benchmark.data.images import decode_cache, decode_image, find_bad_images
from benchmark.data.labels import load_custom_labels
from benchmark.data.scales import DatasetInfo, mos_to_u, u_to_mos
from benchmark.data.splits import make_split
from benchmark.data.transforms import center_crop, normalize, random_crop_flip

__all__ = [
    "DEFAULT_RECIPE",
    "BundledRecipe",
    "CorruptImageError",
    "DataError",
    "DatasetInfo",
    "DuplicateImageError",
    "InvalidScoreError",
    "LabelFileError",
    "MissingImagesError",
    "RecipeError",
    "ScoreOutOfRangeError",
    "SplitError",
    "UnknownDatasetError",
    "build_bundled",
    "cache_root",
    "center_crop",
    "dataset_info",
    "decode_cache",
    "decode_image",
    "find_bad_images",
    "image_folder",
    "list_datasets",
    "load_bundled",
    "load_custom_labels",
    "load_labels",
    "make_split",
    "mos_to_u",
    "normalize",
    "random_crop_flip",
    "read_label_file",
    "u_to_mos",
]
