"""Building a model: the one factory training and ``dor-bench predict`` share.

:func:`create_model` puts a head (by registry name, :mod:`benchmark.heads`) on a backbone as the regime
wants it — in the ``frozen`` regime a small MLP trunk on cached backbone features, after fine-tuning the
whole backbone — the way timm's ``create_model`` builds an architecture from its name. The cell builds
every trial's model through it and a model bundle rebuilds a trained one through it, so the two cannot
differ. :class:`Preprocessing` says how patches become backbone inputs, and :class:`FeatureExtractor` runs a
frozen backbone over them (the features cache and ``predict`` alike).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from benchmark.data import ImagePolicy, ImageStore, build_image_store, mean_over_patches, normalize, to_float_chw
from benchmark.data.policy import DEFAULT_CROP_PCT
from benchmark.folding import fold_batch_norms
from benchmark.heads import get_head
from benchmark.models import IQAModel, backbone_data_config, create_backbone, feature_width

FROZEN = "frozen"
"""The regime whose backbone stays fixed (heads train on its cached features)."""


def seeded_backbone(name: str, pretrained: bool | str, seed: int) -> nn.Module:
    """A backbone whose random initialisation (if any) is seeded, never left to chance."""
    torch.manual_seed(seed)
    return create_backbone(name, pretrained)


def frozen_trunk(num_features: int, hidden: int, dropout: float) -> nn.Sequential:
    """The small MLP between cached features and the head in the frozen regime."""
    return nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(dropout))


def frozen_model(trunk: nn.Module, head: nn.Module) -> nn.Sequential:
    """What trains in the frozen regime (and what its model bundle holds): the trunk, then the head."""
    return nn.Sequential(trunk, head)


def create_model(regime: str, body: nn.Module, head_type: str, head_hparams: dict[str, Any],
                 hidden: int) -> tuple[nn.Module, nn.Module]:
    """``(model, head)``: the head ``head_type`` on ``body`` as ``regime`` trains it.

    ``frozen``: ``body`` is a :func:`frozen_trunk` (``hidden`` units) on backbone features, and the model
    :func:`frozen_model`; otherwise ``body`` is the backbone and the model the whole
    :class:`~benchmark.models.IQAModel`, on images. The head is drawn from torch's global generator: seed it
    before the call.
    """
    if regime == FROZEN:
        head = get_head(head_type, hidden, **head_hparams)
        return frozen_model(body, head), head
    head = get_head(head_type, feature_width(body), **head_hparams)
    return IQAModel(body, head), head


def predict_scores(model: nn.Module, head: nn.Module, inputs: torch.Tensor, per_image: int,
                   precision: AbstractContextManager = nullcontext()) -> torch.Tensor:
    """Each image's score on the ``u`` scale (float32): the head's prediction of each input, averaged over the
    image's ``per_image`` consecutive inputs; ``model`` runs inside ``precision`` (e.g. bf16 autocast), the
    head's prediction outside it. Validation, testing and ``dor-bench predict`` all score through here."""
    with precision:
        outputs = model(inputs)
    return mean_over_patches(head.predict(outputs).float(), per_image)


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


__all__ = ["FROZEN", "FeatureExtractor", "Preprocessing", "create_model", "frozen_model", "frozen_trunk",
           "predict_scores", "seeded_backbone"]
