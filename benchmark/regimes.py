"""Model inputs of the two regimes, as batch sources for :func:`benchmark.training.fit`.

``frozen``: standardised cached backbone features. ``finetune``: images decoded once into a uint8
cache, cropped and flipped on the device with a generator seeded from the cell (never from the head),
so every head of a cell sees the same crops in the same order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.data import decode_cache, normalize, random_crop_flip
from benchmark.features import Preprocessing


def frozen_trunk(num_features: int, hidden: int, dropout: float) -> nn.Sequential:
    """The small MLP between cached features and the head in the frozen regime."""
    return nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(dropout))


def frozen_model(trunk: nn.Module, head: nn.Module) -> nn.Sequential:
    """What trains in the frozen regime (and what ``head.pt`` holds): the trunk, then the head."""
    return nn.Sequential(trunk, head)


class RowTable:
    """One or two label tables (train dataset, then a different test dataset) indexed as one."""

    def __init__(self, tables: list[pd.DataFrame]):
        self.tables = tables
        self.offsets = np.cumsum([0] + [len(t) for t in tables])

    def column(self, name: str) -> np.ndarray:
        """A column over all rows, in row order."""
        return np.concatenate([t[name].to_numpy() for t in self.tables])

    def gather(self, arrays: list[np.ndarray], indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` of per-table arrays aligned with the tables."""
        part = np.searchsorted(self.offsets, indices, side="right") - 1
        if (part == part[0]).all():  # read the memory map in sorted order, then restore the requested order
            return np.asarray(arrays[part[0]][np.sort(indices - self.offsets[part[0]])])[
                np.argsort(np.argsort(indices))]
        return np.stack([arrays[p][i - self.offsets[p]] for p, i in zip(part, indices)])


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

    def train_inputs(self, indices: np.ndarray) -> torch.Tensor:
        """Features of the rows (no augmentation in the frozen regime)."""
        return self.features[torch.tensor(indices, device=self.device)]

    eval_inputs = train_inputs


class ImageSource:
    """Decoded-image cache → seeded random crop + flip (train) or centre crop (eval), normalised."""

    def __init__(self, rows: RowTable, prep: Preprocessing, seed: int, device: str):
        self.rows = rows
        self.images = [decode_cache(table, prep.resize) for table in rows.tables]
        self.prep = prep
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def _batch(self, indices: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(self.rows.gather(self.images, indices))
        if self.device.startswith("cuda"):
            batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.device.startswith("cuda") else x

    def train_inputs(self, indices: np.ndarray) -> torch.Tensor:
        """Random crops and flips drawn from the cell's generator."""
        crops = random_crop_flip(self._batch(indices), self.prep.crop, self.generator)
        return self._layout(normalize(crops, self.prep.mean, self.prep.std))

    def eval_inputs(self, indices: np.ndarray) -> torch.Tensor:
        """Deterministic centre crops."""
        return self._layout(self.prep.eval_batch(self._batch(indices)))
