"""The data side of a cell: labels, the seeded split, the label map, targets and the training order.

Everything here is shared by every head and trial of a cell (it depends on the cell, never on a head),
so building it once per cell is what keeps a pair matched.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from benchmark.config import GridConfig
from benchmark.data import (
    DatasetInfo,
    ImagePolicy,
    dataset_info,
    load_custom_labels,
    load_labels,
    make_split,
    u_to_mos,
)
from benchmark.run.regimes import RowTable
from benchmark.run.seeding import CellSeeds
from benchmark.run.training import epoch_orders
from benchmark.schema import DATA_CONTEXTS, Cell, DatasetRef


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


def dataset_labels(grid: GridConfig, name: str, data_root: str | None) -> tuple[pd.DataFrame, DatasetInfo]:
    """Label table and scale info of a built-in or grid-declared custom dataset."""
    custom = grid.custom_datasets.get(name)
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

    def input_refs(self, cell: Cell, parts: tuple[str, ...] = ("train", "val", "test")) -> tuple[DatasetRef, ...]:
        """What a run saw of each part, for MLflow's dataset inputs: a name, a digest of the part's images
        and scores, where the images are, and how many."""
        images, mos = self.rows.column("image"), self.mos
        refs = []
        for part in parts:
            rows = self.part_indices(part)
            digest = hashlib.sha256("\n".join(f"{images[i]},{mos[i]!r}" for i in rows).encode()).hexdigest()[:16]
            whole_test = part == "test" and cell.test_dataset != cell.dataset
            name = f"{cell.test_dataset} (all)" if whole_test else f"{cell.dataset} split {cell.split} {part}"
            refs.append(DatasetRef(name, digest, os.path.commonpath([str(images[i]) for i in rows]) if len(rows) else "",
                                   DATA_CONTEXTS[part], len(rows)))
        return tuple(refs)


def load_cell_data(grid: GridConfig, cell: Cell, data_root: str | None = None) -> CellData:
    """Labels, the split of ``cell.split``, the label map (training part only) and the epoch orders."""
    data_root = data_root or grid.data_root
    train_labels, train_info = dataset_labels(grid, cell.dataset, data_root)
    parts = make_split(train_labels, seed=cell.split, fractions=grid.split_fractions)
    index = pd.Series(np.arange(len(train_labels)), index=train_labels.index)
    train_idx = np.array(index.loc[parts["train"].index])
    val_idx = np.array(index.loc[parts["val"].index])
    tables, infos, names = [train_labels], [train_info], [cell.dataset]
    if cell.test_dataset == cell.dataset:
        test_idx, test_info = np.array(index.loc[parts["test"].index]), train_info
    else:
        test_labels, test_info = dataset_labels(grid, cell.test_dataset, data_root)
        tables.append(test_labels)
        infos.append(test_info)
        names.append(cell.test_dataset)
        test_idx = np.arange(len(train_labels), len(train_labels) + len(test_labels))
    rows = RowTable(tables)
    u = rows.column("u")
    label_map = LabelMap(test_info)
    if grid.label_norm == "train-minmax":
        low, high = float(u[train_idx].min()), float(u[train_idx].max())
        label_map = LabelMap(test_info, low, high if high > low else low + 1.0)
    direction = np.concatenate([np.full(len(t), 1.0 if i.higher_is_better else -1.0) for t, i in zip(tables, infos)])
    return CellData(
        names=names, policies=[grid.image_policies[name] for name in names], rows=rows, train_idx=train_idx, val_idx=val_idx, test_idx=test_idx, label_map=label_map,
        targets=torch.from_numpy(label_map.targets(u).astype(np.float32)),
        rank_truth=rows.column("mos").astype(np.float64) * direction,
        orders=epoch_orders(len(train_idx), grid.training.epochs, CellSeeds(cell).order),
    )


__all__ = ["CellData", "LabelMap", "dataset_labels", "load_cell_data"]
