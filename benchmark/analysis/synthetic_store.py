"""Synthetic MLflow grids in the harness's exact run schema, for testing and timing the report layer.

:func:`write_synthetic_grid` writes one FINISHED run per (cell, head) with the tags, params, metrics
and artifacts that :class:`benchmark.run.tracking.RunRecorder` gives the runs of a real grid.
Nothing is trained: every run's test predictions are drawn so that their SRCC against the MOS hits a
chosen target, which makes the true difference between two heads known in advance:

* each dataset has a fixed pool of images with a MOS on a 1–5 scale; a split draws its test images
  from that pool (the same images for every backbone, head and seed of the split);
* the target SRCC of a run is ``base(backbone, dataset) + difficulty(pair_key, split) + effect[head]``
  plus small per-run noise (``RUN_NOISE``), so every head of a split shares the split's difficulty,
  as matched pairs do;
* predictions are ``mos + s * e`` with an error ``e`` mostly shared by the heads of a cell, and the
  scale ``s`` found by bisection so that the SRCC equals the target; the seed-faithful DOR head
  (type ``dor-seed``) also carries the seed code's +1/2-bin bias, so its RMSE is worse.

The logged ``test_*`` metrics are :func:`benchmark.metrics.compute_metrics` of the logged
predictions. No weights artifact is written: there is no model behind a synthetic run.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from benchmark.config import Cell
from benchmark.heads import UnknownHeadError, head_hparams
from benchmark.metrics import compute_metrics
from benchmark.provenance import git_sha
from benchmark.schema import CONFIG_ARTIFACT, PREDICTIONS_ARTIFACT, PROBE_HEAD, ROLE_REFERENCE, ROLE_RESULT, metric_key
from benchmark.run.tracking import get_experiment_id, resolve_tracking_uri

log = logging.getLogger(__name__)

MOS_RANGE = (1.0, 5.0)
RUN_NOISE = 0.01
"""Standard deviation of the per-run deviation of the SRCC from its target."""
SPLIT_DIFFICULTY = 0.02
"""Standard deviation of the per-split SRCC offset shared by all heads of a split."""
SHARED_ERROR = 0.8
"""Fraction of the prediction-error variance shared by the heads of a cell."""
EPOCHS = 20
IMAGES_PER_REF = 10
"""Images of the pool per pseudo-reference (the ``ref`` column of predictions.csv, for the grouped bootstrap)."""
_K_SUFFIX = re.compile(r"^(?P<type>.+)-k(?P<k>\d+)$")


class SyntheticStoreError(ValueError):
    """The synthetic grid cannot be written (its experiment already exists)."""


def head_spec(label: str) -> tuple[str, int | None]:
    """Registry type and number of bins of a head label (``dor-k8`` -> ``("dor", 8)``).

    A head type without a ``num_bins`` hyper-parameter in the registry (or not registered) has
    ``None`` bins; without a ``-k<K>`` suffix the registry's default number of bins is used.

    Examples
    --------
    >>> head_spec("dor-k8"), head_spec("dor-seed"), head_spec("mse")
    (('dor', 8), ('dor-seed', 28), ('mse', None))
    """
    match = _K_SUFFIX.match(label)
    head_type, k = (match["type"], int(match["k"])) if match else (label, None)
    try:
        default = head_hparams(head_type).get("num_bins")
    except UnknownHeadError:
        default = None
    return (head_type, None) if default is None else (head_type, k or int(default))


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded from the global seed and a string key (stable across processes)."""
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, parts)).encode())])


def _srcc(mos_ranks: np.ndarray, pred: np.ndarray) -> float:
    return float(np.corrcoef(mos_ranks, stats.rankdata(pred))[0, 1])


def _scale_for_srcc(mos: np.ndarray, error: np.ndarray, target: float) -> float:
    """Scale ``s`` such that SRCC(mos, mos + s * error) is closest to ``target`` (bisection)."""
    # Hand-written: a 1-D bisection on a monotone-in-expectation step function; no library call fits.
    ranks = stats.rankdata(mos)
    low, high = 0.0, 50.0 * float(np.std(mos))
    for _ in range(30):
        mid = 0.5 * (low + high)
        if _srcc(ranks, mos + mid * error) > target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _test_set(seed: int, dataset: str, test_dataset: str, split: int, n_test: int) -> pd.DataFrame:
    """The test images of a split: a seeded draw from the test dataset's fixed image pool."""
    pool_size = 5 * n_test
    pool_rng = _rng(seed, "pool", test_dataset)
    mos = np.clip(pool_rng.normal(3.0, 0.8, pool_size), *MOS_RANGE)
    pick = _rng(seed, "split", dataset, test_dataset, split).choice(pool_size, n_test, replace=False)
    return pd.DataFrame({"image": [f"{test_dataset}/img{i:05d}.png" for i in pick], "mos": mos[pick],
                         "ref": [f"{test_dataset}/ref{i // IMAGES_PER_REF:04d}" for i in pick]})


def _curves(rng: np.random.Generator, final_srcc: float, head_type: str) -> dict[str, list[float]]:
    """Plausible per-epoch validation SRCC (saturating) and training loss (decaying) curves."""
    epochs = np.arange(EPOCHS)
    tau = rng.uniform(2.0, 5.0)
    val = final_srcc * (1.0 - 0.6 * np.exp(-epochs / tau)) + rng.normal(0.0, 0.008, EPOCHS)
    start = 0.35 if head_type == "mse" else 4.0
    loss = start * (0.25 + 0.75 * np.exp(-epochs / tau)) * np.exp(rng.normal(0.0, 0.02, EPOCHS))
    return {"val_srcc": val.tolist(), "train_loss": loss.tolist()}


def write_synthetic_grid(
    tracking_uri: str | None,
    grid: str,
    backbones: Sequence[str],
    heads: Sequence[str],
    datasets: Sequence[str],
    n_splits: int,
    n_seeds: int,
    effect: Mapping[str, float],
    n_test: int,
    seed: int,
    regime: str = "frozen",
    probe_effect: float | None = 0.0,
) -> None:
    """Write a complete synthetic grid (one FINISHED run per cell and head) into an MLflow store.

    Parameters
    ----------
    tracking_uri : str or None
        MLflow tracking URI (``None``: :func:`benchmark.run.tracking.resolve_tracking_uri`'s default).
    grid : str
        Grid name, used as the experiment name and the ``grid`` tag.
    backbones : sequence of str
        Backbone names.
    heads : sequence of str
        Head labels; ``<type>-k<K>`` names a variant with ``K`` bins (e.g. ``dor-k8``).
    datasets : sequence of str
        Dataset names; ``"train->test"`` names a cross-dataset pair.
    n_splits, n_seeds : int
        Splits ``0..n_splits-1`` and seeds ``0..n_seeds-1`` per (backbone, dataset).
    effect : mapping of str to float
        True SRCC shift of each head label (heads not listed: 0).
    probe_effect : float or None, default 0.0
        True SRCC shift of the linear-probe reference run written per cell (role ``reference``, head
        ``probe``); None writes no probe.
    n_test : int
        Test images per split (``n_train = 3 n_test`` and ``n_val = n_test`` are logged, a 60/20/20 split).
    seed : int
        Seed of everything random.
    regime : {"frozen", "finetune"}, default "frozen"
        Regime tag of every run.

    Raises
    ------
    SyntheticStoreError
        When the experiment ``grid`` already exists (synthetic runs are never mixed into a grid).
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    if client.get_experiment_by_name(grid) is not None:
        raise SyntheticStoreError(f"experiment {grid!r} already exists in the store; pick a new grid name "
                                  "or a fresh store.")
    experiment_id = get_experiment_id(client, uri, grid)
    sha = git_sha()
    pairs = [tuple(d.split("->", 1)) if "->" in d else (d, d) for d in datasets]
    for backbone in backbones:
        for train, test in pairs:
            base = _rng(seed, "base", backbone, train, test).uniform(0.72, 0.85)
            for split in range(n_splits):
                test_set = _test_set(seed, train, test, split, n_test)
                difficulty = _rng(seed, "difficulty", backbone, train, test, split).normal(0.0, SPLIT_DIFFICULTY)
                for seed_index in range(n_seeds):
                    cell = Cell(backbone, train, test, split, seed_index, regime)
                    shared = _rng(seed, "error", cell.key).standard_normal(n_test)
                    for label in heads:
                        target = base + difficulty + effect.get(label, 0.0)
                        _write_run(client, experiment_id, grid, cell, label, target, test_set, shared, seed, sha)
                    if probe_effect is not None:
                        _write_run(client, experiment_id, grid, cell, PROBE_HEAD, base + difficulty + probe_effect,
                                   test_set, shared, seed, sha, ROLE_REFERENCE)
    log.info("wrote synthetic grid %r: %d backbones x %d heads x %d datasets x %d splits x %d seeds",
             grid, len(backbones), len(heads), len(pairs), n_splits, n_seeds)


def _write_run(client: MlflowClient, experiment_id: str, grid: str, cell: Cell, label: str, target: float,
               test_set: pd.DataFrame, shared: np.ndarray, seed: int, sha: str, role: str = ROLE_RESULT) -> None:
    head_type, num_bins = head_spec(label)
    rng = _rng(seed, "run", cell.key, label)
    n_test = len(test_set)
    target = float(np.clip(target + rng.normal(0.0, RUN_NOISE), 0.05, 0.99))
    error = np.sqrt(SHARED_ERROR) * shared + np.sqrt(1.0 - SHARED_ERROR) * rng.standard_normal(n_test)
    mos = test_set["mos"].to_numpy()
    pred = mos + _scale_for_srcc(mos, error, target) * error
    if head_type == "dor-seed" and num_bins:
        pred = pred + 0.5 * (MOS_RANGE[1] - MOS_RANGE[0]) / (num_bins - 1)
    metrics = compute_metrics(mos, pred)
    curves = _curves(rng, metrics["srcc"], head_type)
    best_epoch = int(np.argmax(curves["val_srcc"]))
    params: dict[str, object] = {
        "backbone": cell.backbone, "dataset": cell.dataset, "test_dataset": cell.test_dataset,
        "regime": cell.regime, "split": cell.split, "seed": cell.seed, "head.type": head_type,
        "n_train": 3 * n_test, "n_val": n_test, "n_test": n_test, "epochs": EPOCHS, "batch_size": 64,
        "optimizer.name": "adamw", "optimizer.lr": 1e-3, "optimizer.weight_decay": 1e-4,
        "schedule.name": "cosine", "early_stopping.patience": 10, "frozen.hidden": 256,
        "frozen.dropout": 0.1, "synthetic": True,
    }
    if num_bins is not None:
        params["head.num_bins"] = num_bins
    digest = f"{zlib.crc32(cell.key.encode()):08x}"
    tags = {
        "grid": grid, "cell_key": cell.key, "pair_key": cell.pair_key, "backbone": cell.backbone,
        "dataset": cell.dataset, "test_dataset": cell.test_dataset, "head": label, "head_type": head_type,
        "regime": cell.regime, "split": str(cell.split), "seed": str(cell.seed), "git_sha": sha,
        "init_hash": f"init-{digest}", "order_hash": f"order-{digest}",
        "config_hash": f"config-{zlib.crc32(f'{grid}|{label}'.encode()):08x}", "role": role,
    }
    # One log_batch for params, curves and final metrics (RunRecorder makes three calls): the same
    # schema, written about a third faster, which keeps test stores quick to build.
    now = int(time.time() * 1000)
    finals = {**{metric_key(k): v for k, v in metrics.items()}, "best_epoch": best_epoch,
              "best_val_srcc": curves["val_srcc"][best_epoch], "train_seconds": float(rng.uniform(2.0, 6.0))}
    run_id = client.create_run(experiment_id, tags=tags, run_name=f"{label}|{cell.key}").info.run_id
    client.log_batch(
        run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())],
        metrics=[Metric(k, float(v), now, 0) for k, v in finals.items()]
        + [Metric(name, float(v), now, step) for name, values in curves.items() for step, v in enumerate(values)])
    client.log_text(run_id, test_set.assign(pred=pred)[["image", "mos", "pred", "ref"]].to_csv(index=False),
                    PREDICTIONS_ARTIFACT)
    client.log_text(run_id, yaml.safe_dump({"grid": grid, "cell": cell.key, "head": label, "params": params}),
                    CONFIG_ARTIFACT)
    client.set_terminated(run_id, status="FINISHED")


__all__ = ["SyntheticStoreError", "head_spec", "write_synthetic_grid"]
