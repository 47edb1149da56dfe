"""On-disk cache of frozen-backbone features, keyed by (backbone, weights, dataset, crop policy).

In the ``frozen`` regime the backbone is a fixed feature extractor: every image is passed through it
once (deterministic centre crop at the backbone's native resolution, its own normalisation) and the
pooled features are stored as a ``.npy`` file; heads then train on those arrays in seconds.
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

from benchmark.data import cache_root, center_crop, decode_cache, normalize
from benchmark.data.cache import atomic_file
from benchmark.models import backbone_data_config

log = logging.getLogger(__name__)

CROP_POLICY = "resize-shorter/crop_pct+center-crop"


@dataclass(frozen=True)
class Preprocessing:
    """How images become backbone inputs: decoded size, crop size and normalisation."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def for_backbone(cls, backbone: nn.Module, image_size: int | None = None) -> "Preprocessing":
        """The backbone's timm data config (native resolution unless ``image_size`` is given)."""
        config = backbone_data_config(backbone)
        crop = image_size or int(config["input_size"][-1])
        resize = int(round(crop / float(config.get("crop_pct", 0.875))))
        return cls(resize, crop, tuple(config["mean"]), tuple(config["std"]))

    def eval_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Centre crop and normalise a uint8 batch [B, H, W, 3]."""
        return normalize(center_crop(images, self.crop), self.mean, self.std)


def labels_fingerprint(labels: pd.DataFrame) -> str:
    """Hash of the image list (paths in order) of a label table."""
    return hashlib.sha256("\n".join(labels["image"].astype(str)).encode()).hexdigest()[:16]


@torch.inference_mode()
def cached_features(backbone: nn.Module, backbone_name: str, weights_hash: str, dataset: str,
                    labels: pd.DataFrame, prep: Preprocessing, device: str = "cpu", batch_size: int = 16) -> np.ndarray:
    """Features [N, F] (float32) of every image in ``labels``, computed once and cached on disk.

    The cache key covers the backbone name, ``weights_hash`` (:func:`benchmark.models.weights_fingerprint`
    of the backbone), the dataset's image list and the crop policy (resize, crop, normalisation), so
    changed weights or images never reuse stale features.
    """
    key = hashlib.sha256(repr((backbone_name, weights_hash, dataset, labels_fingerprint(labels),
                               CROP_POLICY, prep)).encode()).hexdigest()[:20]
    path = cache_root() / "features" / f"{backbone_name}-{dataset}-{key}.npy"
    if path.exists():
        return np.load(path)
    images = decode_cache(labels, prep.resize)
    backbone = backbone.to(device, memory_format=torch.channels_last).eval()  # ~1.5-2x faster on CPU too
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc=f"features {backbone_name}/{dataset}",
                      unit="batch", leave=False):
        batch = torch.from_numpy(np.array(images[start:start + batch_size])).to(device)
        inputs = prep.eval_batch(batch).contiguous(memory_format=torch.channels_last)
        chunks.append(backbone(inputs).float().cpu().numpy())
    features = np.concatenate(chunks).astype(np.float32)
    with atomic_file(path) as temp:
        np.save(temp, features)
    log.info("cached %s features of %s for %s at %s", features.shape, backbone_name, dataset, path)
    return features
