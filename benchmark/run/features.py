"""How images become backbone inputs, and the on-disk cache of frozen-backbone features.

Every image is stored once at its dataset's policy resolution (:mod:`benchmark.data.patch_store`) and
cut into patches of the backbone's input size (:mod:`benchmark.data.patches`). In the ``frozen`` regime
the backbone is a fixed feature extractor: an image's feature vector is the mean of the pooled features
of its fixed test patches, computed once and stored as a ``.npy`` file keyed by (backbone, weights,
dataset images, policy, patch preprocessing); heads then train on those arrays in seconds.
"""

from __future__ import annotations

import hashlib
import logging
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
from benchmark.data.cache import atomic_file
from benchmark.data.policy import DEFAULT_CROP_PCT
from benchmark.models import backbone_data_config

log = logging.getLogger(__name__)

FEATURES_VERSION = 2
"""Part of the cache key; bumped when the way features are computed changes (2: means over policy patches)."""


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
        """uint8 patches [M, p, p, 3] (on any device) -> normalised float [M, 3, p, p] there."""
        x = normalize(to_float_chw(patches), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def labels_fingerprint(labels: pd.DataFrame) -> str:
    """Hash of the image list (paths in order) of a label table."""
    return hashlib.sha256("\n".join(labels["image"].astype(str)).encode()).hexdigest()[:16]


@torch.inference_mode()
def cached_features(backbone: nn.Module, backbone_name: str, weights_hash: str, dataset: str, labels: pd.DataFrame,
                    policy: ImagePolicy, prep: Preprocessing, device: str = "cpu",
                    batch_size: int = 16) -> np.ndarray:
    """Features [N, F] (float32) of every image in ``labels``: the mean over its test patches, cached on disk.

    The cache key covers the backbone name, ``weights_hash`` (:func:`benchmark.models.weights_fingerprint`
    of the backbone), the dataset's image list, the policy and the preprocessing, so changed weights,
    images or patches never reuse stale features. ``batch_size`` counts patches per forward pass. The
    backbone is moved to ``device`` in channels-last layout: pass a copy that is never trained.
    """
    key = hashlib.sha256(repr((backbone_name, weights_hash, dataset, labels_fingerprint(labels), policy.to_mapping(),
                               prep, FEATURES_VERSION)).encode()).hexdigest()[:20]
    path = cache_root() / "features" / f"{backbone_name}-{dataset}-{key}.npy"
    if path.exists():
        return np.load(path)
    store = prep.store(labels, policy)
    backbone = backbone.to(device, memory_format=torch.channels_last).eval()  # channels-last: ~2x faster on CPU too
    per_image = policy.test_patches
    step = max(1, batch_size // per_image)
    chunks = []
    for start in tqdm(range(0, len(store), step), desc=f"features {backbone_name}/{dataset}", unit="batch",
                      leave=False):
        rows = range(start, min(start + step, len(store)))
        patches = extract_patches(store, batch_test_positions(store.shapes, rows, per_image, prep.patch))
        outputs = backbone(prep.inputs(patches.to(device), channels_last=True))
        chunks.append(mean_over_patches(outputs.float(), per_image).cpu().numpy())
    features = np.concatenate(chunks).astype(np.float32)
    with atomic_file(path) as temp:
        np.save(temp, features)
    log.info("cached %s features of %s for %s at %s", features.shape, backbone_name, dataset, path)
    return features
