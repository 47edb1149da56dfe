"""Scoring images with a model trained by a grid run (``dor-bench predict``).

Every result run stores its :class:`benchmark.bundle.ModelBundle` (``model.pt``): what rebuilds its
model, the image policy of its test dataset, and the map from the head's output to MOS. An image is
scored as in the grid: decoded at the policy's resolution, cut into its fixed test patches, and the
patches' predictions averaged (in the frozen regime the patches' features are averaged, as the grid's
cached features are).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from benchmark.bundle import ModelBundle
from benchmark.data import DataError, load_at_policy, test_patch_positions
from benchmark.factory import FeatureExtractor, predict_scores
from benchmark.store import open_client, resolve_tracking_uri
from benchmark.schema import WEIGHTS_ARTIFACT

log = logging.getLogger(__name__)

PREDICT_COLUMNS = ["image", "score", "u", "error"]


class RunArtifactError(RuntimeError):
    """A run has no usable model artifact."""


@dataclass
class TrainedModel:
    """A rebuilt model: image patches → prediction on the ``u`` scale → MOS."""

    bundle: ModelBundle

    def __post_init__(self) -> None:
        self.backbone, self.predictor, self.head = self.bundle.build()
        frozen = self.bundle.feature_mean is not None
        self.features = FeatureExtractor(self.backbone, self.bundle.preprocessing) if frozen else None

    def patches(self, path: str | Path) -> torch.Tensor:
        """The fixed test patches of one image file, uint8 [n, p, p, 3]."""
        prep, policy = self.bundle.preprocessing, self.bundle.image_policy
        image = load_at_policy(path, policy, prep.patch, prep.crop_pct)
        tops, lefts = test_patch_positions(image.shape[0], image.shape[1], prep.patch, policy.test_patches)
        return torch.stack([torch.from_numpy(np.ascontiguousarray(image[t:t + prep.patch, l:l + prep.patch]))
                            for t, l in zip(tops.tolist(), lefts.tolist())])

    @torch.inference_mode()
    def score(self, path: str | Path) -> tuple[float, float]:
        """Score (MOS scale) and normalised prediction of one image: the mean over its test patches."""
        bundle = self.bundle
        patches = self.patches(path)
        if self.features is not None:  # frozen: an image's feature is the mean of its patches' features
            x, per_image = (self.features(patches, len(patches)) - bundle.feature_mean) / bundle.feature_std, 1
        else:
            x, per_image = bundle.preprocessing.inputs(patches), len(patches)
        value = float(predict_scores(self.predictor, self.head, x, per_image)[0])
        return float(bundle.label_map.to_mos(np.array([value]))[0]), value


def load_trained_model(run_id: str, tracking_uri: str | None = None) -> TrainedModel:
    """Rebuild the model of a FINISHED result run from its ``model.pt`` artifact."""
    client: MlflowClient = open_client(resolve_tracking_uri(tracking_uri))
    names = {a.path for a in client.list_artifacts(run_id)}
    if WEIGHTS_ARTIFACT not in names:
        raise RunArtifactError(f"run {run_id} has no {WEIGHTS_ARTIFACT} artifact (artifacts: {sorted(names)}); it was "
                               "trained with save_weights: false, is a tuning trial or probe, or was written by "
                               "another tool — score with a result run that saved its weights")
    with tempfile.TemporaryDirectory() as tmp:
        return TrainedModel(ModelBundle.from_file(client.download_artifacts(run_id, WEIGHTS_ARTIFACT, tmp)))


def score_images(model: TrainedModel, paths: list[str | Path]) -> pd.DataFrame:
    """Score image files; an unreadable file gets an ``error`` entry and the rest are still scored.

    Returns a table with columns ``image, score, u, error`` in the order of ``paths`` (score and u are
    NaN where error is set).
    """
    rows = []
    for path in paths:
        try:
            score, u = model.score(path)
            rows.append({"image": str(path), "score": score, "u": u, "error": ""})
        except (OSError, DataError) as exc:
            log.warning("cannot score %s: %s", path, exc)
            rows.append({"image": str(path), "score": float("nan"), "u": float("nan"), "error": short_error(exc)})
    return pd.DataFrame(rows, columns=PREDICT_COLUMNS)


def short_error(exc: Exception) -> str:
    """One line about why a file could not be scored (no advice meant for label tables)."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    reason = getattr(exc, "reason", None) or str(exc)
    return reason.splitlines()[0][:160]


__all__ = ["RunArtifactError", "TrainedModel", "load_trained_model", "score_images", "short_error"]
