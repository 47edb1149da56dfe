"""How images become backbone inputs, and the on-disk cache of frozen-backbone features.

Every image is stored once at its dataset's policy resolution (:mod:`benchmark.data.patch_store`) and
cut into patches of the backbone's input size (:mod:`benchmark.data.patches`). In the ``frozen`` regime
the backbone is a fixed feature extractor: an image's feature vector is the mean of the pooled features
of its fixed test patches, computed once and stored as a ``.npy`` file keyed by (backbone, weights,
dataset images, policy, patch preprocessing); heads then train on those arrays in seconds.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.data import (
    ImagePolicy,
    ImageStore,
    batch_test_positions,
    build_image_store,
    cache_root,
    extract_patches,
    mean_over_patches,
    normalize,
    to_float_chw,
)
from benchmark.allocator import keep_freed_memory
from benchmark.data.cache import atomic_file
from benchmark.data.policy import DEFAULT_CROP_PCT
from benchmark.folding import fold_batch_norms
from benchmark.models import backbone_data_config, feature_width

log = logging.getLogger(__name__)

FEATURES_VERSION = 3
"""Part of the cache key; bumped when the way features are computed changes (2: means over policy patches;
3: batch norms folded, which moves features by float rounding only)."""
BATCH_PATCHES = 64
"""Patches per forward pass of the features stage, in whole images (larger batches gain nothing on a CPU)."""


@dataclass(frozen=True)
class Preprocessing:
    """How patches become backbone inputs: patch side, the backbone's crop fraction and normalisation."""

    patch: int
    crop_pct: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_backbone(cls, backbone: nn.Module, image_size: int | None = None) -> "Preprocessing":
        """The backbone's timm data config (native input size unless ``image_size`` is given)."""
        config = backbone_data_config(backbone)
        patch = image_size or int(config["input_size"][-1])
        return cls(patch, float(config.get("crop_pct") or DEFAULT_CROP_PCT), tuple(config["mean"]), tuple(config["std"]))

    def store(self, labels: pd.DataFrame, policy: ImagePolicy) -> ImageStore:
        """The dataset's images at ``policy``'s resolution, fit for this patch size."""
        return build_image_store(labels, policy, self.patch, crop_pct=self.crop_pct)

    def inputs(self, patches: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """uint8 patches [M, p, p, 3] (on any device) -> normalised float [M, 3, p, p] there, in channels-last
        memory (the patches' own layout, no copy) or contiguous."""
        x = normalize(to_float_chw(patches), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def labels_fingerprint(labels: pd.DataFrame) -> str:
    """Hash of the image list (paths in order) of a label table."""
    return hashlib.sha256("\n".join(labels["image"].astype(str)).encode()).hexdigest()[:16]


class FeatureExtractor:
    """A frozen backbone's features of uint8 patches: the mean of the pooled features of each image's patches.

    Runs an inference copy of the backbone (batch norms folded into their convolutions,
    :func:`benchmark.folding.fold_batch_norms`; channels-last, the layout the patches already have), made
    on first use, so an extractor whose features are all cached costs nothing. The cached features of
    every grid and ``dor-bench predict`` go through it alike.
    """

    def __init__(self, backbone: nn.Module, prep: Preprocessing, device: str = "cpu") -> None:
        self.backbone, self.prep, self.device = backbone, prep, device
        self.num_features = feature_width(backbone)

    @functools.cached_property
    def model(self) -> nn.Module:
        """The folded channels-last copy of the backbone on the extractor's device (the backbone is untouched)."""
        pixels = torch.randint(0, 256, (2, self.prep.patch, self.prep.patch, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))  # varied pixels: a wrong fold shows
        example = self.prep.inputs(pixels, True)
        folded = fold_batch_norms(self.backbone, example.to(next(self.backbone.parameters()).device))
        return folded.to(self.device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, patches: torch.Tensor, per_image: int) -> torch.Tensor:
        """uint8 [B * per_image, p, p, 3], image-major -> float32 [B, F] on the CPU."""
        outputs = self.model(self.prep.inputs(patches.to(self.device), channels_last=True))
        return mean_over_patches(outputs.float(), per_image).cpu()


def features_batch_images(per_image: int, batch_patches: int = BATCH_PATCHES) -> int:
    """Images per forward pass: as many whole images as fit in ``batch_patches`` patches (at least one)."""
    return max(1, batch_patches // per_image)


def cached_features(extractor: FeatureExtractor, backbone_name: str, weights_hash: str, dataset: str,
                    labels: pd.DataFrame, policy: ImagePolicy) -> np.ndarray:
    """Features [N, F] (float32) of every image in ``labels``: the mean over its test patches, cached on disk.

    The cache key covers the backbone name, ``weights_hash`` (:func:`benchmark.models.weights_fingerprint`
    of the backbone), the dataset's image list, the policy and the preprocessing, so changed weights,
    images or patches never reuse stale features. Features are written batch by batch into a preallocated
    memory-mapped ``.npy`` file (published whole when complete), so memory stays flat while they are computed
    whatever N; the returned array is the file read back.
    """
    prep = extractor.prep
    key = hashlib.sha256(repr((backbone_name, weights_hash, dataset, labels_fingerprint(labels), policy.to_mapping(),
                               prep, FEATURES_VERSION)).encode()).hexdigest()[:20]
    path = cache_root() / "features" / f"{backbone_name}-{dataset}-{key}.npy"
    if path.exists():
        return np.load(path)
    keep_freed_memory()  # else every forward pass page-faults its activations afresh (benchmark.allocator)
    store = prep.store(labels, policy)
    began = time.perf_counter()
    per_image = policy.test_patches
    step = features_batch_images(per_image)
    with atomic_file(path) as temp:
        features = np.lib.format.open_memmap(temp, mode="w+", dtype=np.float32, shape=(len(store), extractor.num_features))
        for start in tqdm(range(0, len(store), step), desc=f"features {backbone_name}/{dataset}", unit="batch",
                          leave=False):
            rows = range(start, min(start + step, len(store)))
            patches = extract_patches(store, batch_test_positions(store.shapes, rows, per_image, prep.patch))
            features[start : rows.stop] = extractor(patches, per_image).numpy()
        features.flush()
        del features
    seconds = time.perf_counter() - began
    log.info("features of %s for %s: %d images x %d patches in %.1f s (%.1f patches/s), cached at %s", backbone_name,
             dataset, len(store), per_image, seconds, len(store) * per_image / seconds, path)
    return np.load(path)
