"""What a cell's heads all share of its data: the label rows, the split, the label map, targets and the
training order.

Everything here depends on the cell, never on a head, so building it once per cell is what keeps a pair
matched (:func:`benchmark.run.cell_data.load_cell_data` assembles it for a grid's cell).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from benchmark.data.datasets import dataset_info, load_labels
from benchmark.data.labels import load_custom_labels
from benchmark.data.policy import ImagePolicy
from benchmark.data.scales import DatasetInfo, u_to_mos

if TYPE_CHECKING:
    from benchmark.config import CustomDataset


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


@dataclass(frozen=True)
class LabelMap:
    """Maps the dataset's normalised score ``u`` to the heads' targets and predictions back to MOS.

    ``label_norm: scale`` uses the declared scale (targets = u); ``train-minmax`` (the paper's code)
    stretches the training split's range of u to [0, 1]. The test split never influences the map.
    """

    info: DatasetInfo
    u_low: float = 0.0
    u_high: float = 1.0

    def targets(self, u: np.ndarray) -> np.ndarray:
        """Head targets in [0, 1]."""
        return np.clip((np.asarray(u, dtype=np.float64) - self.u_low) / (self.u_high - self.u_low), 0, 1)

    def to_mos(self, prediction: np.ndarray) -> np.ndarray:
        """Head predictions (``u`` scale) on the test dataset's MOS scale; affine, so never clamped:
        ranks are kept, and only the errors clip to the scale (:func:`benchmark.metrics.compute_metrics`)."""
        return u_to_mos(np.asarray(prediction, dtype=np.float64) * (self.u_high - self.u_low) + self.u_low,
                        self.info)

    @property
    def error_range(self) -> tuple[float, float]:
        """The test dataset's declared MOS scale, where RMSE and MAE clip the predictions."""
        return self.info.scale_lo, self.info.scale_hi


def dataset_labels(name: str, data_root: str | None, custom: CustomDataset | None = None
                   ) -> tuple[pd.DataFrame, DatasetInfo]:
    """Label table and scale info of a built-in dataset, or of a grid-declared ``custom`` one named ``name``."""
    if custom is None:
        return load_labels(name, data_root), dataset_info(name)
    labels = load_custom_labels(custom.csv, custom.higher_is_better, custom.scale)
    return labels, replace(labels.attrs["dataset_info"], name=name)


@dataclass
class CellData:
    """Rows, split, targets and order of one cell.

    Attributes
    ----------
    names, policies : list
        The dataset name and image policy of each table of ``rows``.
    rows : RowTable
        The train dataset's labels, followed by the test dataset's when it differs.
    train_idx, val_idx, test_idx : numpy.ndarray
        Row indices of the three parts (``test_idx`` is the whole test dataset across datasets).
    label_map : LabelMap
        u -> head targets and predictions -> MOS.
    targets : torch.Tensor
        Head targets in [0, 1] for every row (float32, CPU).
    rank_truth : numpy.ndarray
        Unclipped truth to rank validation predictions against: the MOS signed by its dataset's
        direction (higher = better), so neither the scale's clamp nor the label map adds ties.
    orders : list of numpy.ndarray
        The training order of every epoch.
    """

    names: list[str]
    policies: list[ImagePolicy]
    rows: RowTable
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    label_map: LabelMap
    targets: torch.Tensor
    rank_truth: np.ndarray
    orders: list[np.ndarray]

    @property
    def mos(self) -> np.ndarray:
        """Scores as in the label files, every row."""
        return self.rows.column("mos").astype(np.float64)

    def part_indices(self, part: str) -> np.ndarray:
        """Rows of ``train``, ``val`` or ``test``."""
        return {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}[part]


def epoch_orders(n_train: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The training order of every epoch, drawn from the cell's seed (identical for all heads)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(n_train, generator=generator).numpy() for _ in range(epochs)]


def order_hash(orders: list[np.ndarray]) -> str:
    """Short hash of the planned sample order, logged so anyone can check a pair saw the same order."""
    digest = hashlib.sha256()
    for order in orders:
        digest.update(np.ascontiguousarray(order, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


__all__ = ["CellData", "LabelMap", "RowTable", "dataset_labels", "epoch_orders", "order_hash"]
