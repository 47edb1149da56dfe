"""One cell of a grid: every head trained as a matched pair on the same data, order, crops and init.

Data flow of a cell: labels → seeded split → label map (u, and back to MOS) → regime inputs (cached
features or decoded images) → :func:`benchmark.training.fit` per head → test metrics on the MOS scale
→ one MLflow run per head.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from torch import nn
from tqdm.auto import tqdm

from benchmark.config import Cell, GridConfig, HeadSpec, stable_seed
from benchmark.data import DatasetInfo, dataset_info, load_custom_labels, load_labels, make_split, u_to_mos
from benchmark.features import Preprocessing, cached_features
from benchmark.heads import get_head, head_hparams
from benchmark.metrics import compute_metrics
from benchmark.models import IQAModel, create_backbone, weights_fingerprint
from benchmark.regimes import FeatureSource, ImageSource, RowTable, frozen_trunk
from benchmark.provenance import git_sha
from benchmark.tracking import RunRecorder, finished_run_exists
from benchmark.training import epoch_orders, fit, order_hash, predict_u

log = logging.getLogger(__name__)


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
        """Head predictions in [0, 1] back on the test dataset's MOS scale."""
        return u_to_mos(np.asarray(prediction, dtype=np.float64) * (self.u_high - self.u_low) + self.u_low,
                        self.info)


@dataclass(frozen=True)
class HeadResult:
    """Summary of one (cell, head) run; ``metrics`` is empty when the run failed."""

    head: str
    metrics: dict[str, float]
    best_epoch: int
    seconds: float


def dataset_labels(grid: GridConfig, name: str, data_root: str | None) -> tuple[pd.DataFrame, DatasetInfo]:
    """Label table and scale info of a built-in or grid-declared custom dataset."""
    custom = grid.custom_datasets.get(name)
    if custom is None:
        return load_labels(name, data_root), dataset_info(name)
    labels = load_custom_labels(custom.csv, custom.higher_is_better, custom.scale)
    return labels, replace(labels.attrs["dataset_info"], name=name)


def seeded_backbone(name: str, pretrained: bool | str, seed: int) -> nn.Module:
    """A backbone whose random initialisation (if any) is seeded, never left to chance."""
    torch.manual_seed(seed)
    return create_backbone(name, pretrained)


@functools.lru_cache(maxsize=2)
def _frozen_backbone(name: str, pretrained: bool | str, seed: int) -> tuple[nn.Module, str]:
    backbone = seeded_backbone(name, pretrained, seed).eval()
    return backbone, weights_fingerprint(backbone)


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class CellRunner:
    """Trains every head of one cell and records one MLflow run per head."""

    def __init__(self, grid: GridConfig, cell: Cell, client: MlflowClient, experiment_id: str,
                 data_root: str | None = None, device: str | None = None):
        self.grid, self.cell, self.client, self.experiment_id = grid, cell, client, experiment_id
        self.data_root = data_root or grid.data_root
        self.device = device or default_device()
        train_labels, train_info = dataset_labels(grid, cell.dataset, self.data_root)
        parts = make_split(train_labels, seed=cell.split, fractions=grid.split_fractions)
        index = pd.Series(np.arange(len(train_labels)), index=train_labels.index)
        self.train_idx = np.array(index.loc[parts["train"].index])
        self.val_idx = np.array(index.loc[parts["val"].index])
        tables = [train_labels]
        if cell.test_dataset == cell.dataset:
            self.test_idx, test_info = np.array(index.loc[parts["test"].index]), train_info
        else:
            test_labels, test_info = dataset_labels(grid, cell.test_dataset, self.data_root)
            tables.append(test_labels)
            self.test_idx = np.arange(len(train_labels), len(train_labels) + len(test_labels))
        self.rows = RowTable(tables)
        u = self.rows.column("u")
        if grid.label_norm == "train-minmax":
            low, high = float(u[self.train_idx].min()), float(u[self.train_idx].max())
            self.label_map = LabelMap(test_info, low, high if high > low else low + 1.0)
        else:
            self.label_map = LabelMap(test_info)
        self.targets = torch.from_numpy(self.label_map.targets(u).astype(np.float32))
        self.orders = epoch_orders(len(self.train_idx), grid.training.epochs, cell.rng_seed)
        self.spec = grid.backbone(cell.backbone)
        if grid.regime == "frozen":  # never trained: one instance per process serves every cell
            self.backbone, self.backbone_hash = _frozen_backbone(self.spec.name, self.spec.pretrained,
                                                                 cell.backbone_seed)
        else:
            self.backbone = seeded_backbone(self.spec.name, self.spec.pretrained, cell.backbone_seed)
            self.backbone_hash = weights_fingerprint(self.backbone)
        self.prep = Preprocessing.for_backbone(self.backbone, grid.image_size)

    def run(self, skip: set[str] = frozenset()) -> list[HeadResult]:
        """Train the heads whose labels are not in ``skip`` and have no FINISHED run yet; return summaries.

        The store is asked again right before each head, so a requeued or concurrently rerun cell never
        adds a second FINISHED run for one (cell, head).
        """
        todo = [spec for spec in self.grid.heads if spec.label not in skip]
        if self.grid.regime == "frozen":
            features = [cached_features(self.backbone, self.spec.name, self.backbone_hash, name, table, self.prep,
                                        self.device) for name, table in zip(self._table_names(), self.rows.tables)]
            source = FeatureSource(features, self.train_idx, self.device)
        initial = copy.deepcopy(self.backbone.state_dict()) if self.grid.regime == "finetune" else None
        results = []
        for spec in todo:
            if finished_run_exists(self.client, self.experiment_id, self.cell.key, spec.label):
                log.info("%s %s: already FINISHED, skipped", self.cell.key, spec.label)
                continue
            if self.grid.regime == "frozen":
                model, head = self._frozen_model(spec, source.num_features)
            else:
                self.backbone.load_state_dict(initial)
                model, head = self._finetune_model(spec)
                source = ImageSource(self.rows, self.prep, self.cell.rng_seed, self.device)
            results.append(self._train_and_record(spec, model, head, source))
        return results

    def _table_names(self) -> list[str]:
        return [self.cell.dataset] if self.cell.test_dataset == self.cell.dataset else [
            self.cell.dataset, self.cell.test_dataset]

    def _head(self, spec: HeadSpec, in_features: int) -> nn.Module:
        torch.manual_seed(stable_seed(f"{self.cell.key}|{spec.label}"))  # head weights are seeded per head
        return get_head(spec.type, in_features, **spec.hparams)

    def _frozen_model(self, spec: HeadSpec, num_features: int) -> tuple[nn.Module, nn.Module]:
        torch.manual_seed(self.cell.rng_seed)  # the shared trunk starts identical for every head
        trunk = frozen_trunk(num_features, self.grid.hidden, self.grid.dropout)
        head = self._head(spec, self.grid.hidden)
        return nn.Sequential(trunk, head).to(self.device), head

    def _finetune_model(self, spec: HeadSpec) -> tuple[nn.Module, nn.Module]:
        head = self._head(spec, self.backbone.num_features)
        model = IQAModel(self.backbone, head).to(self.device)
        if self.device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        return model, head

    def _init_hash(self, model: nn.Module) -> str:
        """Hash of the weights a pair shares at initialisation, taken from the model about to train:
        the backbone (as restored for this head) and, when frozen, the MLP trunk."""
        shared = self.backbone_hash if self.grid.regime == "frozen" else weights_fingerprint(self.backbone)
        if self.grid.regime == "frozen":
            shared += weights_fingerprint(model[0])
        return hashlib.sha256(shared.encode()).hexdigest()[:16]

    def _tags(self, spec: HeadSpec, model: nn.Module) -> dict[str, str]:
        c = self.cell
        return {
            "grid": self.grid.name, "cell_key": c.key, "pair_key": c.pair_key, "backbone": c.backbone,
            "dataset": c.dataset, "test_dataset": c.test_dataset, "head": spec.label, "head_type": spec.type,
            "regime": c.regime, "split": str(c.split), "seed": str(c.seed), "git_sha": git_sha(),
            "init_hash": self._init_hash(model), "order_hash": order_hash(self.orders),
            "config_hash": self.grid.run_config_hash(c, spec),
        }

    def _params(self, spec: HeadSpec) -> dict[str, object]:
        params = dict(self.grid.hyperparameters())
        params.update({f"head.{k}": v for k, v in {**head_hparams(spec.type), **spec.hparams}.items()})
        params.update({
            "backbone.pretrained": self.spec.pretrained, "backbone.weights": self.backbone_hash,
            "preprocessing": asdict(self.prep), "device": self.device, "n_train": len(self.train_idx),
            "n_val": len(self.val_idx), "n_test": len(self.test_idx),
        })
        return params

    def _train_and_record(self, spec: HeadSpec, model: nn.Module, head: nn.Module, source) -> HeadResult:
        with RunRecorder(self.client, self.experiment_id, self._tags(spec, model), self._params(spec)) as run, \
                tqdm(total=self.grid.training.epochs, desc=f"{spec.label} epochs", unit="epoch", leave=False) as bar:
            torch.manual_seed(stable_seed(f"{self.cell.key}|train"))  # dropout etc.: one stream per cell
            result = fit(model, head, source, self.targets, self.train_idx, self.val_idx, self.orders,
                         self.grid.training, self.device, bar, val_scores=self.rows.column("u")[self.val_idx])
            run.log_curves(result.curves)
            pred_u = predict_u(model, head, source, self.test_idx, self.grid.training.batch_size * 2,
                               self.device)
            if not np.isfinite(pred_u).all():
                run.fail(f"{int((~np.isfinite(pred_u)).sum())} non-finite test predictions (diverged model)")
                return HeadResult(spec.label, {}, result.best_epoch, result.seconds)
            mos = self.rows.column("mos")[self.test_idx].astype(np.float64)
            pred = self.label_map.to_mos(pred_u)
            metrics = compute_metrics(mos, pred)
            run.log_metrics({**{f"test_{k}": v for k, v in metrics.items()}, "best_epoch": result.best_epoch,
                             "best_val_srcc": result.best_val_srcc, "train_seconds": result.seconds,
                             "nonfinite_batches": result.nonfinite_batches})
            run.log_predictions(pd.DataFrame({"image": self.rows.column("image")[self.test_idx], "mos": mos,
                                              "pred": pred}))
            run.log_text(self.grid.to_yaml(), "config.yaml")
            if self.grid.save_weights:
                run.log_state(self._weights(spec, model, source),
                              "head.pt" if self.grid.regime == "frozen" else "model.pt")
        return HeadResult(spec.label, metrics, result.best_epoch, result.seconds)

    def _weights(self, spec: HeadSpec, model: nn.Module, source) -> dict:
        """What :mod:`benchmark.predict` needs to rebuild the trained model and map its output to MOS."""
        state = {
            "regime": self.grid.regime, "backbone": self.spec.name, "pretrained": self.spec.pretrained,
            "backbone_weights": self.backbone_hash, "backbone_seed": self.cell.backbone_seed, "preprocessing": asdict(self.prep),
            "head_type": spec.type, "head_hparams": dict(spec.hparams),
            "label_map": {**asdict(self.label_map.info), "u_low": self.label_map.u_low,
                          "u_high": self.label_map.u_high},
        }
        if self.grid.regime == "frozen":
            state.update(hidden=self.grid.hidden, dropout=self.grid.dropout, feature_mean=source.mean,
                         feature_std=source.std, state_dict={k: v.cpu() for k, v in model.state_dict().items()})
        else:
            state["state_dict"] = {k: v.cpu() for k, v in model.state_dict().items()}
        return state
