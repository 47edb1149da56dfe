"""The on-disk cache of frozen-backbone features.

Every image is stored once at its dataset's policy resolution (:mod:`benchmark.data.patch_store`) and
cut into patches of the backbone's input size (:mod:`benchmark.data.patches`). In the ``frozen`` regime
the backbone is a fixed feature extractor: an image's feature vector is the mean of the pooled features
of its fixed test patches, computed once and stored as a ``.npy`` file keyed by (backbone, weights,
dataset images, policy, patch preprocessing); heads then train on those arrays in seconds.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from benchmark.data import (
    ImagePolicy,
    batch_test_positions,
    cache_root,
    extract_patches,
)
from benchmark.allocator import keep_freed_memory
from benchmark.data.cache import atomic_file
from benchmark.factory import FeatureExtractor

log = logging.getLogger(__name__)

FEATURES_VERSION = 3
"""Part of the cache key; bumped when the way features are computed changes (2: means over policy patches;
3: batch norms folded, which moves features by float rounding only)."""
BATCH_PATCHES = 64
"""Patches per forward pass of the features stage, in whole images (larger batches gain nothing on a CPU)."""


def labels_fingerprint(labels: pd.DataFrame) -> str:
    """Hash of the image list (paths in order) of a label table."""
    return hashlib.sha256("\n".join(labels["image"].astype(str)).encode()).hexdigest()[:16]


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
