"""A grid's cell's data (:mod:`benchmark.data.cell_data`): its labels, seeded split and training order, and
what its runs record of each part as MLflow dataset inputs."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import torch

from benchmark.config import GridConfig
from benchmark.data import DatasetInfo, make_split
from benchmark.data.cell_data import CellData, LabelMap, RowTable, dataset_labels, epoch_orders
from benchmark.run.seeding import CellSeeds
from benchmark.schema import DATA_CONTEXTS, Cell, DatasetRef


def grid_labels(grid: GridConfig, name: str, data_root: str | None) -> tuple[pd.DataFrame, DatasetInfo]:
    """Label table and scale of a dataset of ``grid``: built-in, or declared in its ``custom_datasets``."""
    return dataset_labels(name, data_root, grid.custom_datasets.get(name))


def load_cell_data(grid: GridConfig, cell: Cell, data_root: str | None = None) -> CellData:
    """Labels, the split of ``cell.split``, the label map (training part only) and the epoch orders."""
    data_root = data_root or grid.data_root
    train_labels, train_info = grid_labels(grid, cell.dataset, data_root)
    parts = make_split(train_labels, seed=cell.split, fractions=grid.split_fractions)
    index = pd.Series(np.arange(len(train_labels)), index=train_labels.index)
    train_idx = np.array(index.loc[parts["train"].index])
    val_idx = np.array(index.loc[parts["val"].index])
    tables, infos, names = [train_labels], [train_info], [cell.dataset]
    if cell.test_dataset == cell.dataset:
        test_idx, test_info = np.array(index.loc[parts["test"].index]), train_info
    else:
        test_labels, test_info = grid_labels(grid, cell.test_dataset, data_root)
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


def input_refs(data: CellData, cell: Cell, parts: tuple[str, ...] = ("train", "val", "test")) -> tuple[DatasetRef, ...]:
    """What a run saw of each part, for MLflow's dataset inputs: a name, a digest of the part's images
    and scores, where the images are, and how many."""
    images, mos = data.rows.column("image"), data.mos
    refs = []
    for part in parts:
        rows = data.part_indices(part)
        digest = hashlib.sha256("\n".join(f"{images[i]},{mos[i]!r}" for i in rows).encode()).hexdigest()[:16]
        whole_test = part == "test" and cell.test_dataset != cell.dataset
        name = f"{cell.test_dataset} (all)" if whole_test else f"{cell.dataset} split {cell.split} {part}"
        refs.append(DatasetRef(name, digest, os.path.commonpath([str(images[i]) for i in rows]) if len(rows) else "",
                               DATA_CONTEXTS[part], len(rows)))
    return tuple(refs)


__all__ = ["grid_labels", "input_refs", "load_cell_data"]
