"""A dry run's time estimate, from rates measured on this machine for each backbone of the grid.

Nothing is read from a dataset or a cache: each backbone is built with random weights at its input size
and timed for a few batches here — inference (frozen features, validation and test patches) and, for
fine-tuning, a training step; the frozen regime's MLP is timed as one matrix product of a cell's trials.
The estimate is an upper bound on training (every trial runs all its epochs; early stopping ends most
sooner) and counts frozen features as if none were cached yet.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import timm
import torch

from benchmark.config import GridConfig
from benchmark.data import dataset_info
from benchmark.models import backbone_data_config, create_backbone, feature_width

TIMED_BATCHES = 3


@dataclass(frozen=True)
class Estimate:
    """Seconds of a plan's work: frozen features (first run only) and training, per backbone."""

    features_s: dict[str, float]
    training_s: dict[str, float]

    @property
    def total_s(self) -> float:
        """Everything, in seconds."""
        return sum(self.features_s.values()) + sum(self.training_s.values())

    def describe(self) -> str:
        """One line per backbone and the total."""
        lines = [f"  {name}: features {self.features_s.get(name, 0.0) / 60:.1f} min (first run only), training "
                 f"{self.training_s[name] / 60:.1f} min" for name in self.training_s]
        return "\n".join([*lines, f"  total: {self.total_s / 60:.1f} min at most on this machine"])


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _timed(step, warmup: int = 1) -> float:
    """Seconds per call of ``step`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(TIMED_BATCHES):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / TIMED_BATCHES


@functools.lru_cache(maxsize=8)
def backbone_rates(name: str, image_size: int | None, train: bool) -> tuple[float, float, int, int]:
    """(inference patches/s, training patches/s or 0, feature width, patch side) of a backbone here."""
    device = _device()
    model = create_backbone(name, False).to(device)
    side = image_size or int(backbone_data_config(model)["input_size"][-1])
    batch = 32 if device == "cuda" else 4
    x = torch.randn(batch, 3, side, side, device=device)
    model.eval()
    with torch.inference_mode():
        infer = batch / _timed(lambda: model(x))
    fit = 0.0
    if train:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)

        def step() -> None:
            optimizer.zero_grad()
            model(x).float().mean().backward()
            optimizer.step()

        fit = batch / _timed(step)
    return infer, fit, feature_width(model), side


def _gemm_rate(features: int, width: int, batch: int) -> float:
    """Multiply-adds per second of the frozen regime's trunk product here."""
    x, w = torch.randn(batch, features), torch.randn(width, features)
    return batch * features * width / _timed(lambda: x @ w.T)


def estimate_seconds(grid: GridConfig, todo: dict, trials: int) -> Estimate:
    """Upper-bound seconds of the plan's pending work (``todo``: cell -> units, as in a grid plan)."""
    features_s: dict[str, float] = {}
    training_s: dict[str, float] = {}
    for spec in (b for b in grid.backbones if timm.is_model(b.name)):  # validation names the others
        cells = [cell for cell in todo if cell.backbone == spec.name]
        infer, fit, width, _ = backbone_rates(spec.name, grid.image_size, grid.regime == "finetune")
        seconds = 0.0
        if grid.regime == "frozen":
            datasets = {(c.dataset, c.test_dataset) for c in cells}
            names = {name for pair in datasets for name in pair}
            features_s[spec.name] = sum(_rows(grid, n) * grid.image_policies[n].test_patches / infer for n in names)
            for cell in cells:
                models = len(todo[cell] - {"probe"}) * trials
                rate = _gemm_rate(width, grid.hidden * max(1, models), grid.training.batch_size)
                n = _rows(grid, cell.dataset)
                train, val, _ = grid.split_fractions
                per_epoch = (2 * n * train + n * val) * width * grid.hidden * models / rate
                seconds += per_epoch * grid.training.epochs
        else:
            for cell in cells:
                n, policy = _rows(grid, cell.dataset), grid.image_policies[cell.dataset]
                train, val, _ = grid.split_fractions
                fits = len(todo[cell] - {"probe"}) * trials
                epoch = n * train * policy.train_patches / fit + n * val * policy.test_patches / infer
                seconds += fits * grid.training.epochs * epoch
        training_s[spec.name] = seconds
    return Estimate(features_s, training_s)


def _rows(grid: GridConfig, dataset: str) -> int:
    if dataset in grid.custom_datasets:
        from benchmark.run.cell_data import dataset_labels

        return len(dataset_labels(grid, dataset, grid.data_root)[0])
    return dataset_info(dataset).n_rows


__all__ = ["Estimate", "backbone_rates", "estimate_seconds"]
