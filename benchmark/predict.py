"""Scoring images with a model trained by a grid run (``dor-bench predict``).

Every run stores what is needed to rebuild its model: ``head.pt`` (frozen regime: trunk + head and the
feature standardisation; the backbone is rebuilt from its named weights, whose fingerprint is checked)
or ``model.pt`` (fine-tuning: the whole model), the image policy of its test dataset, and the map from
the head's output to MOS. An image is scored as in the grid: decoded at the policy's resolution, cut
into its fixed test patches, and the patches' predictions averaged.
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

from benchmark.run.cell import seeded_backbone
from benchmark.run.cell_data import LabelMap
from benchmark.data import DataError, DatasetInfo, ImagePolicy, load_at_policy, mean_over_patches, test_patch_positions
from benchmark.run.features import Preprocessing
from benchmark.heads import get_head
from benchmark.models import IQAModel, weights_fingerprint
from benchmark.run.regimes import frozen_model, frozen_trunk
from benchmark.schema import WEIGHTS_ARTIFACTS
from benchmark.run.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)

PREDICT_COLUMNS = ["image", "score", "u", "error"]


class RunArtifactError(RuntimeError):
    """A run has no usable model artifact."""


@dataclass
class TrainedModel:
    """A rebuilt model: image patches → prediction on the ``u`` scale → MOS."""

    backbone: nn.Module
    predictor: nn.Module
    head: nn.Module
    prep: Preprocessing
    policy: ImagePolicy
    label_map: LabelMap
    feature_mean: torch.Tensor | None = None
    feature_std: torch.Tensor | None = None

    def patches(self, path: str | Path) -> torch.Tensor:
        """The fixed test patches of one image file, uint8 [n, p, p, 3]."""
        image = load_at_policy(path, self.policy, self.prep.patch, self.prep.crop_pct)
        tops, lefts = test_patch_positions(image.shape[0], image.shape[1], self.prep.patch, self.policy.test_patches)
        size = self.prep.patch
        return torch.stack([torch.from_numpy(np.ascontiguousarray(image[t:t + size, l:l + size]))
                            for t, l in zip(tops.tolist(), lefts.tolist())])

    @torch.inference_mode()
    def score(self, path: str | Path) -> tuple[float, float]:
        """Score (MOS scale) and normalised prediction of one image: the mean over its test patches."""
        patches = self.patches(path)
        x = self.prep.inputs(patches)
        if self.feature_mean is not None:  # frozen: an image's feature is the mean of its patches' features
            x = (mean_over_patches(self.backbone(x), len(patches)) - self.feature_mean) / self.feature_std
            u = self.head.predict(self.predictor(x)).float()
        else:
            u = mean_over_patches(self.head.predict(self.predictor(x)).float(), len(patches))
        value = float(u[0])
        return float(self.label_map.to_mos(np.array([value]))[0]), value


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
    policy = ImagePolicy(**state["image_policy"])
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
        return TrainedModel(backbone, predictor.eval(), head, prep, policy, label_map, state["feature_mean"],
                            state["feature_std"])
    head = get_head(state["head_type"], backbone.num_features, **state["head_hparams"])
    model = IQAModel(backbone, head)
    model.load_state_dict(state["state_dict"])
    return TrainedModel(nn.Identity(), model.eval(), head, prep, policy, label_map)


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
