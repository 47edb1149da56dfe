"""A trained model and everything needed to rebuild it and map its output to MOS (the ``model.pt`` artifact).

:class:`ModelBundle` is written by the cell for every result run (when the grid saves weights) and read by
``dor-bench predict``; both sides go through :meth:`ModelBundle.to_bytes` / :meth:`ModelBundle.from_file`,
and the model is rebuilt by the very factory training used (:func:`benchmark.factory.create_model`), so the
architecture (e.g. the TF padding of the offline efficientnet-lite weights) matches. In the frozen regime the bundle holds the
trunk + head and the feature standardisation (the backbone is rebuilt from its named weights, whose
fingerprint must match); after fine-tuning it holds the whole model.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from benchmark.data import DatasetInfo, ImagePolicy
from benchmark.data.cell_data import LabelMap
from benchmark.factory import FROZEN, Preprocessing, create_model, frozen_trunk, seeded_backbone
from benchmark.models import feature_width, weights_fingerprint


class BundleError(RuntimeError):
    """A model bundle cannot be rebuilt here (other backbone weights, a bundle of another version)."""


@dataclass
class ModelBundle:
    """What rebuilds a trained model: the backbone's identity, the head, the image protocol and the weights."""

    regime: str
    backbone: str
    pretrained: bool | str
    backbone_seed: int
    backbone_weights: str
    preprocessing: Preprocessing
    image_policy: ImagePolicy
    head_type: str
    head_hparams: dict[str, Any]
    label_map: LabelMap
    state_dict: dict[str, torch.Tensor]
    hidden: int = 0
    dropout: float = 0.0
    feature_mean: torch.Tensor | None = None
    feature_std: torch.Tensor | None = None

    def to_bytes(self) -> bytes:
        """The bundle as a ``torch.save`` file (plain containers and tensors: loads with ``weights_only``)."""
        info = self.label_map
        state = {**{f.name: getattr(self, f.name) for f in fields(self)}, "preprocessing": asdict(self.preprocessing),
                 "image_policy": self.image_policy.to_mapping(),
                 "label_map": {**asdict(info.info), "u_low": info.u_low, "u_high": info.u_high},
                 "state_dict": {k: v.cpu() for k, v in self.state_dict.items()}}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: str) -> ModelBundle:
        """Read a file written from :meth:`to_bytes`."""
        state = torch.load(path, weights_only=True)
        mapping = dict(state.pop("label_map"))
        low, high = mapping.pop("u_low"), mapping.pop("u_high")
        return cls(**{**state, "preprocessing": Preprocessing(**state["preprocessing"]),
                      "image_policy": ImagePolicy(**state["image_policy"]),
                      "label_map": LabelMap(DatasetInfo(**mapping), low, high)})

    def build(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """``(backbone, predictor, head)`` in eval mode: images -> backbone features -> predictor -> head outputs.

        In the frozen regime ``predictor`` is the trunk + head and the backbone the named pretrained (or
        seeded) one; after fine-tuning the backbone is inside ``predictor`` and ``backbone`` is the identity.

        Raises
        ------
        BundleError
            When the frozen regime's backbone weights available here differ from the run's.
        """
        backbone = seeded_backbone(self.backbone, self.pretrained, self.backbone_seed).eval()
        frozen = self.regime == FROZEN
        if frozen and weights_fingerprint(backbone) != self.backbone_weights:
            raise BundleError(f"the backbone weights available here ({self.backbone}, pretrained="
                              f"{self.pretrained!r}) differ from those the run used; its frozen head needs "
                              "the same weights")
        body = frozen_trunk(feature_width(backbone), self.hidden, self.dropout) if frozen else backbone
        model, head = create_model(self.regime, body, self.head_type, self.head_hparams, self.hidden)
        model.load_state_dict(self.state_dict)
        return (backbone if frozen else nn.Identity()), model.eval(), head


__all__ = ["BundleError", "ModelBundle"]
