"""Data layer of the benchmark: label tables, splits, the embedded ``bundled`` dataset and the image store.

Public API::

    load_labels(name, root=None) -> DataFrame      # columns image, mos, u, ref, distortion
    load_custom_labels(csv_path, higher_is_better, scale=None, root=None) -> DataFrame
    dataset_info(name) -> DatasetInfo; list_datasets(); mos_to_u(mos, info); u_to_mos(u, info)
    make_split(labels, seed, fractions=(0.6, 0.2, 0.2)) -> {"train", "val", "test"}
    decode_image(path, size) -> uint8 [size, size, 3] (the ``imagenet`` policy's decoder)
    to_float_chw(uint8 [B, H, W, 3]) -> float [B, 3, H, W] in [0, 1]; normalize(x, mean, std)

Native-resolution patches (policy -> store -> positions -> patches -> mean score per image)::

    ImagePolicy(resize, train_patches=1, test_patches=None); ShorterSide(pixels); default_policy(dataset)
    parse_image_policy(mapping, where, defaults=None) -> ImagePolicy; DATASET_POLICIES
    build_image_store(labels, policy, patch, cache_dir=None, workers=None, crop_pct=0.875, processes=True)
        -> ImageStore                                  # parallel, resumable after a kill, published whole
    undersized_images(labels, policy, patch, crop_pct=0.875) -> [(path, (w, h))]   # headers only
    check_patch_size(labels, policy, patch, crop_pct=0.875)   # raises PatchSizeError naming them
    train_patch_positions(shapes, indices, per_image, patch, generator) -> PatchPositions
    test_patch_positions(height, width, patch, n) -> (tops, lefts)
    batch_test_positions(shapes, indices, per_image, patch) -> PatchPositions
    extract_patches(store, positions, pin_memory=False, flip=True) -> uint8 [M, patch, patch, 3]
    flip_patches(patches, flips) -> patches (in place, on any device)
    mean_over_patches(predictions, per_image) -> per-image scores
    find_bad_images(labels, workers=None) -> [(path, reason)]; cache_root()
    bundled_is_built(recipe=DEFAULT_RECIPE, cache=None) -> bool (builds nothing); DEFAULT_RECIPE.n_rows

The ``bundled`` dataset's labels are a proxy from full-reference metrics, not human opinion.
"""

import importlib
from typing import Any

_SUBMODULES = {
    "bundled": ("DEFAULT_RECIPE", "BundledRecipe", "build_bundled", "bundled_folder", "bundled_is_built", "load_bundled"),
    "cache": ("cache_root",),
    "datasets": ("dataset_info", "image_folder", "list_datasets", "load_labels", "read_label_file"),
    "errors": ("CorruptImageError", "CorruptImagesError", "DataError", "DuplicateImageError", "ImagePolicyError", "InvalidScoreError", "LabelFileError", "MissingImagesError", "PatchSizeError", "RecipeError", "ScoreOutOfRangeError", "SplitError", "StoreSpaceError", "UnknownDatasetError"),
    "images": ("decode_image", "find_bad_images"),
    "labels": ("load_custom_labels",),
    "patch_store": ("ImageStore", "build_image_store", "check_patch_size", "load_at_policy", "undersized_images"),
    "patches": ("PatchPositions", "batch_test_positions", "extract_patches", "flip_patches", "mean_over_patches", "test_patch_positions", "train_patch_positions"),
    "policy": ("DATASET_POLICIES", "ImagePolicy", "ShorterSide", "default_policy", "parse_image_policy"),
    "scales": ("DatasetInfo", "mos_to_u", "u_to_mos"),
    "splits": ("make_split",),
    "transforms": ("normalize", "to_float_chw"),
}
"""Submodule of each public name. They load on first use (PEP 562), so a module that needs one torch-free
part (``policy``, ``errors``, ``scales``) does not load the image and proxy-label code, which imports torch."""
_HOME = {name: module for module, names in _SUBMODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


__all__ = [
    "BundledRecipe",
    "CorruptImageError",
    "CorruptImagesError",
    "DATASET_POLICIES",
    "DEFAULT_RECIPE",
    "DataError",
    "DatasetInfo",
    "DuplicateImageError",
    "ImagePolicy",
    "ImagePolicyError",
    "ImageStore",
    "InvalidScoreError",
    "LabelFileError",
    "MissingImagesError",
    "PatchPositions",
    "PatchSizeError",
    "RecipeError",
    "ScoreOutOfRangeError",
    "ShorterSide",
    "SplitError",
    "StoreSpaceError",
    "UnknownDatasetError",
    "batch_test_positions",
    "build_bundled",
    "build_image_store",
    "bundled_folder",
    "bundled_is_built",
    "cache_root",
    "check_patch_size",
    "dataset_info",
    "decode_image",
    "default_policy",
    "extract_patches",
    "find_bad_images",
    "flip_patches",
    "image_folder",
    "list_datasets",
    "load_at_policy",
    "load_bundled",
    "load_custom_labels",
    "load_labels",
    "make_split",
    "mean_over_patches",
    "mos_to_u",
    "normalize",
    "parse_image_policy",
    "read_label_file",
    "test_patch_positions",
    "to_float_chw",
    "train_patch_positions",
    "u_to_mos",
    "undersized_images",
]
