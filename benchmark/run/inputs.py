"""The model side of a cell: its backbone, the regime's inputs, and the models every head starts from.

Everything here depends on the cell, never on a head, so every head and trial of a cell starts from the
same weights and reads the same batches:

* the backbone — in the frozen regime one never-trained instance per process serves every cell (its
  features are computed once and cached on disk); fine-tuning restores the cell's initial state before
  every trial;
* the frozen MLP trunk — initialised once per cell from the cell's trunk seed, copied into every model;
* the head — seeded from the cell and its label, its output layer at the training prior unless
  ``init: default``.

``init_hash`` (what the pair shares at initialisation) and ``order_hash`` are computed once per cell.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from dataclasses import asdict

import torch
from torch import nn

from benchmark.bundle import ModelBundle
from benchmark.config import GridConfig
from benchmark.data.cell_data import CellData, order_hash
from benchmark.factory import (
    FROZEN,
    FeatureExtractor,
    Preprocessing,
    create_model,
    frozen_trunk,
    seeded_backbone,
)
from benchmark.models import feature_width, weights_fingerprint
from benchmark.run.features import cached_features
from benchmark.run.regimes import FeatureSource, ImageSource
from benchmark.run.seeding import CellSeeds
from benchmark.run.training import BatchSource
from benchmark.schema import BackboneParams, Cell, HeadSpec


@functools.lru_cache(maxsize=2)
def frozen_backbone(name: str, pretrained: bool | str, seed: int) -> tuple[nn.Module, str]:
    """The process's never-trained backbone and its weights' fingerprint (shared by every cell)."""
    backbone = seeded_backbone(name, pretrained, seed).eval()
    return backbone, weights_fingerprint(backbone)


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class CellInputs:
    """Backbone, inputs and initial models of one cell (shared by all its heads and trials).

    The constructor takes the cell's ``backbone`` (the one its models are built on: the process's frozen copy,
    or a fresh seeded instance to fine-tune) and the fingerprint of its initial weights; :meth:`open` loads
    them. Features and image stores are built on first use.
    """

    def __init__(self, grid: GridConfig, cell: Cell, data: CellData, backbone: nn.Module, backbone_hash: str,
                 device: str) -> None:
        self.grid, self.cell, self.data = grid, cell, data
        self.device = device
        self.seeds = CellSeeds(cell)
        self.backbone_spec = grid.backbone(cell.backbone)
        self.frozen = grid.regime == FROZEN
        self.backbone, self.backbone_hash = backbone, backbone_hash
        self._initial_state = None if self.frozen else copy.deepcopy(backbone.state_dict())
        self.prep = Preprocessing.for_backbone(backbone, grid.image_size)
        self.order_hash = order_hash(data.orders)

    @classmethod
    def open(cls, grid: GridConfig, cell: Cell, data: CellData, device: str | None = None) -> CellInputs:
        """The cell's inputs with its backbone loaded: the process's frozen copy (its fingerprint names the
        initial weights) and, to fine-tune, a fresh instance from the same seed."""
        spec, seed = grid.backbone(cell.backbone), CellSeeds(cell).backbone
        backbone, digest = frozen_backbone(spec.name, spec.pretrained, seed)
        if grid.regime != FROZEN:
            backbone = seeded_backbone(spec.name, spec.pretrained, seed)
        return cls(grid, cell, data, backbone, digest, device or default_device())

    @functools.cached_property
    def features(self) -> FeatureSource:
        """Standardised features of the initial backbone (the frozen regime's inputs, the probe's always),
        from the process's frozen copy of it (same seed and weights), never from a backbone being trained."""
        spec = self.backbone_spec
        extractor = FeatureExtractor(frozen_backbone(spec.name, spec.pretrained, self.seeds.backbone)[0], self.prep,
                                     self.device)
        arrays = [cached_features(extractor, self.backbone_spec.name, self.backbone_hash, name, table, policy)
                  for name, table, policy in zip(self.data.names, self.data.rows.tables, self.data.policies)]
        return FeatureSource(arrays, self.data.train_idx, self.device)

    @functools.cached_property
    def _images(self) -> ImageSource:
        """The fine-tuning inputs: the datasets' image stores, opened once per cell."""
        return ImageSource(self.data.rows, self.data.policies, self.prep, self.seeds.augment, self.device)

    def prepare(self) -> None:
        """Build the cell's caches without training anything: the image stores and, frozen, the features."""
        _ = self.features if self.frozen else self._images

    def source(self) -> BatchSource:
        """The regime's inputs, with the patch stream at its start (every trial sees the same patches)."""
        return self.features if self.frozen else self._images.restart()

    @functools.cached_property
    def _trunk(self) -> nn.Sequential:
        torch.manual_seed(self.seeds.trunk)
        return frozen_trunk(feature_width(self.backbone), self.grid.hidden, self.grid.dropout)

    @functools.cached_property
    def init_hash(self) -> str:
        """Hash of the weights a pair shares at initialisation: the backbone and, when frozen, the trunk."""
        shared = self.backbone_hash + (weights_fingerprint(self._trunk) if self.frozen else "")
        return hashlib.sha256(shared.encode()).hexdigest()[:16]

    def build(self, head_spec: HeadSpec) -> tuple[nn.Module, nn.Module]:
        """``(model, head)`` a trial of ``spec`` starts from: the shared init, the head's own seed, its output
        layer at the training prior unless ``init: default``."""
        if self.frozen:
            body = copy.deepcopy(self._trunk)
        else:
            self.backbone.load_state_dict(self._initial_state)
            body = self.backbone
        torch.manual_seed(self.seeds.head(head_spec.label))
        model, head_module = create_model(self.grid.regime, body, head_spec.type, head_spec.hparams, self.grid.hidden)
        if head_spec.init == "prior":
            head_module.init_prior(self.data.targets[self.data.train_idx])
        model = model.to(self.device)
        if self.device.startswith("cuda") and not self.frozen:
            model = model.to(memory_format=torch.channels_last)
        return model, head_module

    def bundle(self, head_spec: HeadSpec, model: nn.Module) -> ModelBundle:
        """The trained ``model`` of ``spec`` as a :class:`ModelBundle` (what ``predict`` rebuilds)."""
        features = self.features if self.frozen else None
        return ModelBundle(
            regime=self.grid.regime, backbone=self.backbone_spec.name, pretrained=self.backbone_spec.pretrained,
            backbone_seed=self.seeds.backbone, backbone_weights=self.backbone_hash, preprocessing=self.prep,
            image_policy=self.data.policies[-1], head_type=head_spec.type, head_hparams=dict(head_spec.hparams),
            label_map=self.data.label_map, state_dict={k: v.cpu() for k, v in model.state_dict().items()},
            hidden=self.grid.hidden, dropout=self.grid.dropout,
            feature_mean=None if features is None else features.mean,
            feature_std=None if features is None else features.std)

    def backbone_params(self) -> BackboneParams:
        """What a run records of its backbone and preprocessing."""
        return BackboneParams(self.backbone_spec.pretrained, self.backbone_hash, asdict(self.prep), self.device)


__all__ = ["CellInputs", "default_device", "frozen_backbone"]
