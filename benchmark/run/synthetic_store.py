"""Synthetic MLflow grids written through the harness's own records, for testing and timing the report layer.

:func:`write_synthetic_grid` builds a real :class:`benchmark.config.GridConfig`, records it on its experiment
as a run of the grid would, and writes every unit a grid writes — per cell and head a ``result`` run with
one ``trial`` child per tuning trial, and the probe's ``reference`` runs — from the same record builder
(:func:`benchmark.run.tracking.new_record`), so their tags, params and metrics are those of real runs.
Nothing is trained: every run's test predictions are drawn so that their SRCC against the MOS hits a
chosen target, which makes the true difference between two heads known in advance:

* each dataset has a fixed pool of images with a MOS on a 1–5 scale; a split draws its test images
  from that pool (the same images for every backbone, head and seed of the split);
* the target SRCC of a run is ``base(backbone, dataset) + difficulty(pair_key, split) + effect[head]``
  plus small per-run noise (``RUN_NOISE``), so every head of a split shares the split's difficulty,
  as matched pairs do;
* predictions are ``mos + s * e`` with an error ``e`` mostly shared by the heads of a cell, and the
  scale ``s`` found by bisection so that the SRCC equals the target; the seed-faithful DOR head
  (type ``dor-seed``) also carries the seed code's +1/2-bin bias, so its RMSE is worse;
* a trial's val SRCC is the head's target plus ``lr_profile[head][trial]`` plus noise; the trial with
  the best val SRCC is the result's selection.

The logged ``test_*`` metrics are :func:`benchmark.metrics.compute_metrics` of the logged predictions.
No weights artifact is written: there is no model behind a synthetic run.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from scipy import stats

from benchmark.config import GridConfig, parse_grid
from benchmark.metrics import compute_metrics
from benchmark.run.cell import PROBE_SPEC
from benchmark.run.grid import probe_cells
from benchmark.run.seeding import CellSeeds
from benchmark.run.tracking import create_run, log_record, new_record, open_experiment
from benchmark.run.tuning import select_trial, trial_list
from benchmark.schema import (
    CONFIG_ARTIFACT,
    DATA_CONTEXTS,
    EPOCH_TIMES,
    FINISHED,
    PREDICTION_COLUMNS,
    PREDICTIONS_ARTIFACT,
    ROLE_REFERENCE,
    ROLE_RESULT,
    ROLE_TRIAL,
    TRAIN_LOSS,
    VAL_SRCC,
    BackboneParams,
    Cell,
    DatasetRef,
    FitSummary,
    HeadSpec,
    RunRecord,
    Sizes,
)
from benchmark.store import resolve_tracking_uri

log = logging.getLogger(__name__)

MOS_RANGE = (1.0, 5.0)
RUN_NOISE = 0.01
"""Standard deviation of the per-run deviation of the SRCC from its target."""
SPLIT_DIFFICULTY = 0.02
"""Standard deviation of the per-split SRCC offset shared by all heads of a split."""
VAL_NOISE = 0.01
"""Standard deviation of a trial's val SRCC around its profile."""
SHARED_ERROR = 0.8
"""Fraction of the prediction-error variance shared by the heads of a cell."""
EPOCHS = 20
EPOCH_SECONDS = 0.2
"""Training seconds of a synthetic epoch (validation takes a quarter of it; scoring the test split too)."""
IMAGES_PER_REF = 10
"""Images of the pool per pseudo-reference (the ``ref`` column of predictions.csv)."""
DEFAULT_TUNING = (3.0e-4, 1.0e-3, 3.0e-3)
_K_SUFFIX = re.compile(r"^(?P<type>.+)-k(?P<k>\d+)$")


class SyntheticStoreError(ValueError):
    """The synthetic grid cannot be written (its experiment already exists)."""


def _head_entry(label: str) -> dict:
    """A head label's grid entry: ``dor-k8`` is ``{type: dor, num_bins: 8}``, any other label its own type."""
    match = _K_SUFFIX.match(label)
    return {"type": match["type"], "num_bins": int(match["k"])} if match else {}


def synthetic_grid(grid: str, backbones: Sequence[str], heads: Sequence[str], datasets: Sequence[str],
                   n_splits: int, n_seeds: int, regime: str = "frozen",
                   tuning: Sequence[float] | None = DEFAULT_TUNING,
                   compare: Sequence[str] | None = None) -> GridConfig:
    """The grid a synthetic store holds (datasets ``"train->test"`` name cross-dataset pairs; ``compare``: its
    ``A:B`` pairs, else each head against the first)."""
    pairs = [dict(zip(("train", "test"), d.split("->", 1), strict=True)) if "->" in d else d for d in datasets]
    data = {"name": grid, "regime": regime, "backbones": {b: {"pretrained": True} for b in backbones},
            "heads": {label: _head_entry(label) for label in heads}, "datasets": pairs, "splits": n_splits,
            "seeds": list(range(n_seeds)), "epochs": EPOCHS}
    if tuning:
        data["tuning"] = {"lr": list(tuning)}
    if compare:
        data["compare"] = list(compare)
    return parse_grid(data, f"<synthetic grid {grid}>")


def _rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded from the global seed and a string key (stable across processes)."""
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, parts)).encode())])


def _cell_rng(seed: int, cell: Cell, stream: str, *extra: object) -> np.random.Generator:
    """A generator of one cell's stream, seeded from the global seed and the cell's typed fields (never its
    display key), as the harness seeds its own streams (:class:`benchmark.run.seeding.CellSeeds`)."""
    return np.random.default_rng([seed, CellSeeds(cell).stream(stream, *extra)])


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
    columns = PREDICTION_COLUMNS
    return pd.DataFrame({columns.image: [f"{test_dataset}/img{i:05d}.png" for i in pick], columns.mos: mos[pick],
                         columns.ref: [f"{test_dataset}/ref{i // IMAGES_PER_REF:04d}" for i in pick]})


def _curves(rng: np.random.Generator, final_srcc: float, head_type: str) -> dict[str, list[float]]:
    """Plausible per-epoch validation SRCC (saturating) and training loss (decaying) curves, and fixed
    per-epoch seconds (:data:`~benchmark.schema.EPOCH_TIMES`)."""
    epochs = np.arange(EPOCHS)
    tau = rng.uniform(2.0, 5.0)
    val = final_srcc * (1.0 - 0.6 * np.exp(-epochs / tau)) + rng.normal(0.0, 0.008, EPOCHS)
    start = 0.35 if head_type == "mse" else 4.0
    loss = start * (0.25 + 0.75 * np.exp(-epochs / tau)) * np.exp(rng.normal(0.0, 0.02, EPOCHS))
    seconds = dict(zip(EPOCH_TIMES, (EPOCH_SECONDS, EPOCH_SECONDS / 4, 0.0), strict=True))
    return {VAL_SRCC: val.tolist(), TRAIN_LOSS: loss.tolist(),
            **{name: [value] * EPOCHS for name, value in seconds.items()}}


class _Writer:
    """Writes the synthetic runs of one grid (records from :func:`new_record`, no claims)."""

    def __init__(self, client: MlflowClient, experiment_id: str, grid: GridConfig, seed: int) -> None:
        self.client, self.experiment_id, self.grid, self.seed = client, experiment_id, grid, seed
        self.trials = trial_list(grid.training, grid.tuning)

    def record(self, cell: Cell, spec: HeadSpec, role: str, n_test: int, **fields) -> RunRecord:
        digest = f"{CellSeeds(cell).stream('digest'):08x}"
        probe = spec is PROBE_SPEC
        parts = ("train", "val") if role == ROLE_TRIAL else ("train", "val", "test")
        sizes = Sizes(3 * n_test, n_test, n_test)
        inputs = tuple(DatasetRef(f"{cell.dataset} split {cell.split} {part}", f"{digest}{part}", "synthetic",
                                  DATA_CONTEXTS[part], getattr(sizes, f"n_{part}"))
                       for part in parts)
        return new_record(
            self.grid, cell, spec, role, ("alpha=1",) if probe else tuple(t.key for t in self.trials),
            backbone=BackboneParams(True, f"weights-{cell.backbone}", {"patch": 224}, "synthetic"),
            init_hash=f"init-{digest}", order_hash=f"order-{digest}",
            image_policies={name: self.grid.image_policies[name].describe()
                            for name in dict.fromkeys((cell.dataset, cell.test_dataset))},
            sizes=sizes, inputs=inputs, **fields)

    def write(self, record: RunRecord, predictions: pd.DataFrame | None = None) -> str:
        run_id = create_run(self.client, self.experiment_id, record)
        log_record(self.client, run_id, record)
        if predictions is not None:
            self.client.log_text(run_id, predictions.to_csv(index=False), PREDICTIONS_ARTIFACT)
            self.client.log_text(run_id, self.grid.to_yaml(), CONFIG_ARTIFACT)
        self.client.set_terminated(run_id, status=FINISHED)
        return run_id

    def unit(self, cell: Cell, spec: HeadSpec, target: float, test_set: pd.DataFrame, shared: np.ndarray,
             profile: Sequence[float]) -> None:
        """One head (or the probe) of a cell: its trials, then its result with test predictions."""
        rng = _cell_rng(self.seed, cell, "run", spec.label)
        n_test = len(test_set)
        target = float(np.clip(target + rng.normal(0.0, RUN_NOISE), 0.05, 0.99))
        error = np.sqrt(SHARED_ERROR) * shared + np.sqrt(1.0 - SHARED_ERROR) * rng.standard_normal(n_test)
        mos = test_set[PREDICTION_COLUMNS.mos].to_numpy()
        pred = mos + _scale_for_srcc(mos, error, target) * error
        if spec.type == "dor-seed":
            pred = pred + 0.5 * (MOS_RANGE[1] - MOS_RANGE[0]) / (int(spec.hparams.get("num_bins", 28)) - 1)
        metrics = compute_metrics(mos, pred)
        predictions = test_set.assign(**{PREDICTION_COLUMNS.pred: pred})[list(PREDICTION_COLUMNS)]
        if spec is PROBE_SPEC:
            fit = FitSummary(-1, target, float(rng.uniform(0.1, 0.3)))
            self.write(self.record(cell, spec, ROLE_REFERENCE, n_test, tuned={"alpha": 1.0}, fit=fit, test=metrics),
                       predictions)
            return
        vals = [target + offset + rng.normal(0.0, VAL_NOISE) for offset in profile]
        curves = [_curves(rng, val, spec.type) for val in vals]
        fits = [FitSummary(int(np.argmax(c[VAL_SRCC])), max(c[VAL_SRCC]), float(rng.uniform(2.0, 6.0)))
                for c in curves]
        chosen = select_trial([f.best_val_srcc for f in fits]) if len(self.trials) > 1 else 0
        trial = self.trials[chosen]
        scores = {t.key: f.best_val_srcc for t, f in zip(self.trials, fits)} if len(self.trials) > 1 else {}
        result = self.record(cell, spec, ROLE_RESULT, n_test, trial=trial.key, tuned=trial.values,
                             trial_scores=scores, fit=replace(fits[chosen], score_seconds=EPOCH_SECONDS / 4),
                             curves=curves[chosen], test=metrics)
        parent = self.write(result, predictions)
        if len(self.trials) > 1:
            for index, other in enumerate(self.trials):
                self.write(self.record(cell, spec, ROLE_TRIAL, n_test, trial=other.key, tuned=other.values,
                                       fit=fits[index], curves=curves[index], parent_run_id=parent))


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
    tuning: Sequence[float] | None = DEFAULT_TUNING,
    lr_profile: Mapping[str, Sequence[float]] | None = None,
    compare: Sequence[str] | None = None,
) -> GridConfig:
    """Write a complete synthetic grid into an MLflow store and return the grid it holds.

    Parameters
    ----------
    tracking_uri : str or None
        MLflow tracking URI (``None``: :func:`benchmark.store.resolve_tracking_uri`'s default).
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
    n_test : int
        Test images per split (``n_train = 3 n_test`` and ``n_val = n_test`` are logged, a 60/20/20 split).
    seed : int
        Seed of everything random.
    regime : {"frozen", "finetune"}, default "frozen"
        Regime of the grid.
    probe_effect : float or None, default 0.0
        True SRCC shift of the linear-probe reference runs (one per split, as a grid records them);
        None writes no probe.
    tuning : sequence of float or None
        Learning rates of the tuning budget (one trial child per value); None: no tuning.
    lr_profile : mapping of str to sequence of float, optional
        Per head label, the val SRCC offset of each trial (default 0: the selection is noise).
    compare : sequence of str, optional
        The grid's ``compare:`` pairs (``"A:B"``); default each head against the first.

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
    config = synthetic_grid(grid, backbones, heads, datasets, n_splits, n_seeds, regime, tuning, compare)
    writer = _Writer(client, open_experiment(client, uri, config, "synthetic store"), config, seed)
    flat = [0.0] * len(writer.trials)
    with_probe = probe_cells(config) if probe_effect is not None else set()
    for cell in config.cells():
        base = _rng(seed, "base", cell.backbone, cell.dataset, cell.test_dataset).uniform(0.72, 0.85)
        difficulty = _rng(seed, "difficulty", cell.backbone, cell.dataset, cell.test_dataset,
                          cell.split).normal(0.0, SPLIT_DIFFICULTY)
        test_set = _test_set(seed, cell.dataset, cell.test_dataset, cell.split, n_test)
        shared = _cell_rng(seed, cell, "error").standard_normal(n_test)
        for spec in config.heads:
            writer.unit(cell, spec, base + difficulty + effect.get(spec.label, 0.0), test_set, shared,
                        (lr_profile or {}).get(spec.label, flat))
        if cell in with_probe:
            writer.unit(cell, PROBE_SPEC, base + difficulty + probe_effect, test_set, shared, flat)
    log.info("wrote synthetic grid %r: %d cells x %d heads", grid, len(config.cells()), len(config.heads))
    return config


__all__ = ["SyntheticStoreError", "synthetic_grid", "write_synthetic_grid"]
