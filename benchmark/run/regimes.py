"""Model inputs of the two regimes, as batch sources for :func:`benchmark.run.training.fit`.

``frozen``: standardised cached backbone features (one vector per image). ``finetune``: images stored
once at their dataset's policy resolution; each training image gives ``train_patches`` random patches
(positions and flips drawn from a generator seeded from the cell, never from the head, so every head of a
cell sees the same patches in the same order) and each evaluated image its fixed ``test_patches``,
whose predictions are averaged into the image's score.

A source returns ``(inputs, per_image)``: the inputs of ``per_image`` consecutive patches per image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.data import ImagePolicy, batch_test_positions, extract_patches, train_patch_positions
from benchmark.run.features import Preprocessing


def frozen_trunk(num_features: int, hidden: int, dropout: float) -> nn.Sequential:
    """The small MLP between cached features and the head in the frozen regime."""
    return nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(dropout))


def frozen_model(trunk: nn.Module, head: nn.Module) -> nn.Sequential:
    """What trains in the frozen regime (and what its model bundle holds): the trunk, then the head."""
    return nn.Sequential(trunk, head)


def stacked_trunk_forward(trunks: list[nn.Sequential], features: torch.Tensor,
                          training: bool = True) -> list[torch.Tensor]:
    """The hidden activations of several :func:`frozen_trunk` trunks on the same features, in one matrix product.

    The trunks' first layers are concatenated along their outputs, so ``T`` trunks cost one ``[B, F] x
    [F, T*H]`` product instead of ``T`` small ones; gradients flow back to each trunk's own parameters.
    In training, one dropout mask of shape ``[B, H]`` is drawn (the draw a single trunk makes) and shared
    by every trunk — each trunk sees exactly what it would see trained alone from the same seed.

    Returns
    -------
    list of Tensor
        ``[B, H]`` per trunk, in order (views of one ``[B, T*H]`` tensor).
    """
    linear, dropout = trunks[0][0], trunks[0][2]
    hidden = nn.functional.gelu(nn.functional.linear(features, torch.cat([t[0].weight for t in trunks]),
                                                     torch.cat([t[0].bias for t in trunks])))
    width = linear.out_features
    if training and dropout.p > 0:
        mask = nn.functional.dropout(torch.ones(len(features), width, device=features.device), dropout.p, True)
        hidden = (hidden.view(len(features), len(trunks), width) * mask[:, None, :]).view(len(features), -1)
    return list(hidden.split(width, dim=1))


class RowTable:
    """One or two label tables (train dataset, then a different test dataset) indexed as one."""

    def __init__(self, tables: list[pd.DataFrame]):
        self.tables = tables
        self.offsets = np.cumsum([0] + [len(t) for t in tables])

    def column(self, name: str) -> np.ndarray:
        """A column over all rows, in row order."""
        return np.concatenate([t[name].to_numpy() for t in self.tables])

    def locate(self, indices: np.ndarray) -> tuple[int, np.ndarray]:
        """(table, rows within it) of indices that all lie in one table (a batch never mixes datasets)."""
        part = np.searchsorted(self.offsets, indices, side="right") - 1
        if not (part == part[0]).all():
            raise ValueError("a batch mixes rows of the train and the test dataset; batch each part separately")
        return int(part[0]), np.asarray(indices) - self.offsets[part[0]]


class FeatureSource:
    """Cached features standardised with the training part's mean and standard deviation."""

    def __init__(self, features: list[np.ndarray], train_idx: np.ndarray, device: str):
        self.features = torch.from_numpy(np.concatenate(features)).float()
        train = self.features[torch.tensor(train_idx)]
        self.mean = train.mean(0)
        std = train.std(0)
        # a feature (nearly) constant on the training part must not blow up on other rows
        self.std = std.clamp_min(1e-2 * float(std.mean()) + 1e-12)
        self.features = ((self.features - self.mean) / self.std).to(device)
        self.device = device

    @property
    def num_features(self) -> int:
        """Width of the feature vectors."""
        return self.features.shape[1]

    def train_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """Features of the rows (one per image, no augmentation in the frozen regime)."""
        return self.features[torch.tensor(indices, device=self.device)], 1

    eval_inputs = train_inputs

    def eval_patches(self, indices: np.ndarray) -> int:
        """Inputs per image that :meth:`eval_inputs` gives (one feature vector)."""
        return 1


class ImageSource:
    """Image stores at each dataset's policy → random training patches, fixed test patches, normalised."""

    def __init__(self, rows: RowTable, policies: list[ImagePolicy], prep: Preprocessing, seed: int, device: str):
        self.rows = rows
        self.policies = policies
        self.stores = [prep.store(table, policy) for table, policy in zip(rows.tables, policies)]
        self.prep = prep
        self.device = device
        self.cuda = device.startswith("cuda")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def restart(self) -> "ImageSource":
        """Rewind the patch stream to its seed, so the next trial draws the same patches as the first."""
        self.generator.manual_seed(self.seed)
        return self

    def _inputs(self, table: int, positions) -> torch.Tensor:
        patches = extract_patches(self.stores[table], positions, pin_memory=self.cuda)
        return self.prep.inputs(patches.to(self.device, non_blocking=True), channels_last=self.cuda)

    def train_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """``train_patches`` random patches (and flips) per image, drawn from the cell's generator."""
        table, rows = self.rows.locate(indices)
        per_image = self.policies[table].train_patches
        positions = train_patch_positions(self.stores[table].shapes, rows, per_image, self.prep.patch, self.generator)
        return self._inputs(table, positions), per_image

    def eval_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """The fixed ``test_patches`` of every image."""
        table, rows = self.rows.locate(indices)
        per_image = self.policies[table].test_patches
        return self._inputs(table, batch_test_positions(self.stores[table].shapes, rows, per_image,
                                                        self.prep.patch)), per_image

    def eval_patches(self, indices: np.ndarray) -> int:
        """Patches per image that :meth:`eval_inputs` gives for these rows."""
        return self.policies[self.rows.locate(indices)[0]].test_patches
