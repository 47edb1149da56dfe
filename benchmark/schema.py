"""The run record: every tag, param, metric, curve and artifact name of a grid's MLflow runs, in one place.

A grid's experiment holds three kinds of runs, told apart by their ``role``:

* ``result`` — one per (cell, head): the selected tuning trial, scored once on the test split; the
  statistics and tables use these only;
* ``trial`` — one per (cell, head, tuning trial): a child run of its result run (``mlflow.parentRunId``),
  trained and scored on val only;
* ``reference`` — the closed-form linear probe (head label ``probe``), one per split and initial backbone:
  a yardstick for the trained heads, never in the tests between heads.

Every writer (the harness, the synthetic store, the calibration scripts) builds a :class:`RunRecord` and
calls :meth:`RunRecord.to_mlflow`; every reader (the report, ``predict``) calls :meth:`RunRecord.from_mlflow`.
No other module spells a tag, param or metric name, so writers and readers cannot drift apart. The grid
itself is recorded once per experiment (:class:`GridRecord`, an experiment tag), so a report knows the
expected cells, the heads, the pairs to compare and the ROPE without guessing them from the runs.

This module imports neither torch nor MLflow: the report's side of the suite runs without them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from benchmark.metrics import METRIC_NAMES

ROLE_RESULT, ROLE_TRIAL, ROLE_REFERENCE = "result", "trial", "reference"
PROBE_HEAD = "probe"
"""Head label (and head type) of the linear-probe reference run."""
FAILURE_TAG = "failure"
"""Why a run ended FAILED (the exception or the divergence), set on the run itself."""
DIVERGED = "diverged:"
"""Start of the ``failure`` tag of a run whose model diverged (non-finite predictions)."""
EXPIRED = "claim expired:"
"""Start of the ``failure`` tag of a run whose process stopped heartbeating (killed, not failed by its head)."""
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
SOURCE_TAG = "mlflow.source.name"
SOURCE = "dor-bench"
GRID_TAG = "dor.grid"
"""Experiment tag holding the :class:`GridRecord` (JSON) of the grid the experiment runs."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Makes MLflow 3's UI open the experiment on its training runs, not on the GenAI traces overview."""
DESCRIPTION_TAG = "mlflow.note.content"

CURVES = ("train_loss", "val_srcc")
"""Per-epoch learning curves (step = epoch)."""
EPOCH_TIMES = ("train_s", "val_s", "input_wait_s")
"""Per-epoch wall seconds (step = epoch): training steps, validation, and the part of the training time spent
waiting for the next batch's inputs (what a faster loader or prefetching could win back). Frozen-regime models
trained together share their epochs' seconds."""
PREDICTIONS_ARTIFACT = "predictions.csv"
"""Test predictions: columns ``image, mos, pred, ref`` (``pred`` on the MOS scale, unclamped; ``ref`` the
image's content group)."""
CONFIG_ARTIFACT = "config.yaml"
TRACEBACK_ARTIFACT = "traceback.txt"
WEIGHTS_ARTIFACT = "model.pt"
"""The trained model and what is needed to rebuild it (:mod:`benchmark.bundle`)."""
PREDICTION_COLUMNS = ("image", "mos", "pred", "ref")
DATA_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
"""MLflow dataset-input context of each part of a split."""
DATASET_CONTEXT_TAG = "mlflow.data.context"

_HEAD_PREFIX, _POLICY_PREFIX, _BACKBONE_PREFIX, _TUNED_PREFIX = "head.", "image_policy.", "backbone.", "tuned."
TRIAL_SCORES_PARAM = "tuning.val_srcc"
BASE_TRIAL = "base"
"""The key of the one trial of a grid without tuning."""


def trial_key(values: dict[str, float]) -> str:
    """The readable key of a tuning trial, e.g. ``lr=0.001,weight_decay=0.0001`` (``base`` without tuning).

    Examples
    --------
    >>> trial_key({"lr": 3e-4, "weight_decay": 0.0})
    'lr=0.0003,weight_decay=0'
    >>> trial_values(trial_key({"lr": 3e-4}))
    {'lr': 0.0003}
    """
    return ",".join(f"{name}={value:g}" for name, value in values.items()) or BASE_TRIAL


def trial_values(key: str) -> dict[str, float]:
    """The tuned values a trial key names (:func:`trial_key` read back)."""
    if key == BASE_TRIAL:
        return {}
    return {name: float(value) for name, value in (part.split("=", 1) for part in key.split(","))}



def test_metric(name: str) -> str:
    """MLflow metric name of a final test metric.

    Examples
    --------
    >>> test_metric("srcc")
    'test_srcc'
    """
    return f"test_{name}"


@dataclass(frozen=True)
class Cell:
    """One (backbone, train dataset, test dataset, split, seed, regime): all heads of a cell are matched."""

    backbone: str
    dataset: str
    test_dataset: str
    split: int
    seed: int
    regime: str

    @property
    def pair_key(self) -> str:
        """The comparison group (backbone, datasets, regime) whose per-split differences the statistics test."""
        return f"{self.backbone}|{self.dataset}->{self.test_dataset}|{self.regime}"

    @property
    def key(self) -> str:
        """Readable unique key, logged as the ``cell_key`` tag (a display string: seeds never derive from it)."""
        return f"{self.pair_key}|split{self.split}|seed{self.seed}"


@dataclass(frozen=True)
class WorkKey:
    """One unit of work, done exactly once: (role, cell, head) and, for a tuning trial, the trial."""

    role: str
    cell_key: str
    head: str
    trial: str = ""

    def tags(self) -> dict[str, str]:
        """The tags that name the unit (what a claim searches for)."""
        tags = {"role": self.role, "cell_key": self.cell_key, "head": self.head}
        return {**tags, "trial": self.trial} if self.trial else tags


@dataclass(frozen=True)
class FitSummary:
    """Scalar outcome of training: best epoch (-1 for the closed-form probe), its val SRCC, seconds,
    batches skipped for a non-finite loss."""

    best_epoch: int
    best_val_srcc: float
    train_seconds: float
    nonfinite_batches: int = 0
    score_seconds: float = math.nan
    """Seconds scoring the test split (result runs)."""


@dataclass(frozen=True)
class BackboneParams:
    """What a run records of its backbone: where its weights came from, their fingerprint, how patches
    become its inputs, and the device it ran on."""

    pretrained: bool | str
    weights: str
    preprocessing: dict[str, Any]
    device: str


@dataclass(frozen=True)
class Sizes:
    """Rows of the three parts of a run's split."""

    n_train: int
    n_val: int
    n_test: int


FIT_COLUMNS = tuple(f.name for f in fields(FitSummary))
"""Metrics of a training run's outcome (and columns of :meth:`RunRecord.as_row`)."""
SIZE_COLUMNS = tuple(f.name for f in fields(Sizes))


@dataclass(frozen=True)
class DatasetRef:
    """What a run saw of one part of its split, logged as an MLflow dataset input."""

    name: str
    digest: str
    source: str
    context: str
    rows: int


@dataclass
class RunRecord:
    """Everything one MLflow run of a grid carries, and the only place that names it.

    Writers fill the fields and call :meth:`to_mlflow`; readers get them back from :meth:`from_mlflow`
    (``run_id``, ``status``, ``start_time``, ``artifact_uri`` and ``failure`` are filled on reading).
    ``settings`` are the grid's training settings (the probe's record holds only those it uses), ``tuned``
    the values of the trial (a result run: the selected trial's), ``tuning`` every trial key of the budget.
    """

    grid: str
    cell: Cell
    head: str
    head_type: str
    role: str
    trial: str = ""
    git_sha: str = ""
    init_hash: str = ""
    order_hash: str = ""
    config_hash: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    backbone: BackboneParams | None = None
    image_policies: dict[str, str] = field(default_factory=dict)
    sizes: Sizes | None = None
    head_hparams: dict[str, Any] = field(default_factory=dict)
    head_init: str = ""
    tuning: tuple[str, ...] = ()
    tuned: dict[str, float] = field(default_factory=dict)
    trial_scores: dict[str, float] = field(default_factory=dict)
    """A result run's evidence for its selection: every trial's val SRCC (trial key -> value)."""
    fit: FitSummary | None = None
    test: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    inputs: tuple[DatasetRef, ...] = ()
    parent_run_id: str = ""
    run_id: str = ""
    status: str = ""
    start_time: int = 0
    artifact_uri: str = ""
    failure: str = ""

    def work_key(self) -> WorkKey:
        """The unit of work this run holds (a result run's ``trial`` names its selection, not its unit)."""
        return WorkKey(self.role, self.cell.key, self.head, self.trial if self.role == ROLE_TRIAL else "")

    @property
    def run_name(self) -> str:
        """A short name that stays readable where the UI cuts it (~25 characters): ``dor · lite0 · s3`` for
        split 3, ``dor · lite0 · s3#1`` at seed 1, a trial's key after it; the full key is in the tags."""
        backbone = self.cell.backbone.removeprefix("efficientnet_")
        parts = [self.head, backbone, f"s{self.cell.split}" + (f"#{self.cell.seed}" if self.cell.seed else "")]
        if self.role == ROLE_TRIAL:
            parts.append(self.trial)
        return " · ".join(parts)

    @property
    def description(self) -> str:
        """What the run is, in a sentence (the run page's description)."""
        what = {ROLE_RESULT: f"Result of head `{self.head}` ({self.head_type}): the tuning trial `{self.trial}` "
                             "selected on val SRCC, scored once on the test split.",
                ROLE_TRIAL: f"Tuning trial `{self.trial}` of head `{self.head}` ({self.head_type}): trained and scored "
                            "on val only.",
                ROLE_REFERENCE: "Closed-form ridge probe on the cell's initial backbone features: the yardstick of "
                                "the health check, never a tested head."}.get(self.role, "")
        score = f" Test SRCC {self.test['srcc']:.3f}." if "srcc" in self.test else ""
        return f"{what}{score} Cell `{self.cell.key}` of grid `{self.grid}`."

    def tags(self) -> dict[str, str]:
        """Tags set when the run is created (they name it: claims search them)."""
        cell = self.cell
        values = {"grid": self.grid, "cell_key": cell.key, "pair_key": cell.pair_key, "backbone": cell.backbone,
                  "dataset": cell.dataset, "test_dataset": cell.test_dataset, "head": self.head,
                  "head_type": self.head_type, "regime": cell.regime, "split": str(cell.split), "seed": str(cell.seed),
                  "git_sha": self.git_sha, "init_hash": self.init_hash, "order_hash": self.order_hash,
                  "config_hash": self.config_hash, "role": self.role, RUN_NAME_TAG: self.run_name, SOURCE_TAG: SOURCE}
        if self.trial:
            values["trial"] = self.trial
        if self.parent_run_id:
            values[PARENT_TAG] = self.parent_run_id
        return values

    def params(self) -> dict[str, str]:
        """Every param, as MLflow stores them (JSON text for non-strings, so they read back typed)."""
        values: dict[str, Any] = {k: v for k, v in self.settings.items() if k not in self.tuned}
        if self.backbone is not None:
            values.update({f"{_BACKBONE_PREFIX}{k}": v for k, v in asdict(self.backbone).items()})
        values.update({f"{_POLICY_PREFIX}{k}": v for k, v in self.image_policies.items()})
        if self.sizes is not None:
            values.update(asdict(self.sizes))
        values.update({f"{_HEAD_PREFIX}{k}": v for k, v in self.head_hparams.items()})
        if self.head_init:
            values[f"{_HEAD_PREFIX}init"] = self.head_init
        if self.tuning:
            values["tuning"] = list(self.tuning)
        if self.trial_scores:
            values[TRIAL_SCORES_PARAM] = self.trial_scores
        values.update({f"{_TUNED_PREFIX}{k}": v for k, v in self.tuned.items()})
        return {k: _encode(v) for k, v in values.items()}

    def metrics(self) -> list[tuple[str, float, int]]:
        """``(name, value, step)`` of every metric: final values at step 0, curves at step = epoch."""
        finals = {test_metric(k): v for k, v in self.test.items()}
        if self.fit is not None:
            finals.update({k: v for k, v in asdict(self.fit).items()
                           if not (k == "best_epoch" and v < 0) and not (isinstance(v, float) and math.isnan(v))})
        points = [(k, float(v), 0) for k, v in finals.items()]
        points += [(name, float(v), step) for name in (*CURVES, *EPOCH_TIMES)
                   for step, v in enumerate(self.curves.get(name, []))]
        return points

    def to_mlflow(self) -> tuple[dict[str, str], dict[str, str], list[tuple[str, float, int]]]:
        """``(tags, params, metrics)`` as :meth:`tags`, :meth:`params` and :meth:`metrics` give them."""
        return self.tags(), self.params(), self.metrics()

    @classmethod
    def from_mlflow(cls, run: Any) -> RunRecord:
        """Rebuild the record of an MLflow ``Run`` (final metric values; curves are read separately).

        Runs without the grid's tags (not written by the harness) give a record whose ``cell`` has empty
        names and split/seed -1; :meth:`placeable` tells them apart.
        """
        tags, data = run.data.tags, run.data
        params = {k: _decode(v) for k, v in data.params.items()}

        def prefixed(prefix: str) -> dict[str, Any]:
            return {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}

        head = prefixed(_HEAD_PREFIX)
        init = head.pop("init", "")
        backbone = prefixed(_BACKBONE_PREFIX)
        metrics = data.metrics
        fit = None
        if "best_val_srcc" in metrics:
            fit = FitSummary(int(metrics.get("best_epoch", -1)), metrics["best_val_srcc"],
                             metrics.get("train_seconds", math.nan), int(metrics.get("nonfinite_batches", 0)),
                             metrics.get("score_seconds", math.nan))
        named = set(SIZE_COLUMNS) | {"tuning", TRIAL_SCORES_PARAM}
        settings = {k: v for k, v in params.items()
                    if k not in named and not k.startswith((_HEAD_PREFIX, _POLICY_PREFIX, _BACKBONE_PREFIX,
                                                            _TUNED_PREFIX))}
        return cls(
            grid=tags.get("grid", ""), cell=Cell(tags.get("backbone", ""), tags.get("dataset", ""),
                                                 tags.get("test_dataset", ""), _int(tags.get("split")),
                                                 _int(tags.get("seed")), tags.get("regime", "")),
            head=tags.get("head", ""), head_type=tags.get("head_type", ""), role=tags.get("role", ""),
            trial=tags.get("trial", ""), git_sha=tags.get("git_sha", ""), init_hash=tags.get("init_hash", ""),
            order_hash=tags.get("order_hash", ""), config_hash=tags.get("config_hash", ""), settings=settings,
            backbone=BackboneParams(**backbone) if set(backbone) == {f.name for f in fields(BackboneParams)} else None,
            image_policies=prefixed(_POLICY_PREFIX),
            sizes=Sizes(*(int(params[k]) for k in SIZE_COLUMNS)) if all(k in params for k in SIZE_COLUMNS) else None,
            head_hparams=head, head_init=init,
            tuning=tuple(params.get("tuning", ())), tuned=prefixed(_TUNED_PREFIX),
            trial_scores=dict(params.get(TRIAL_SCORES_PARAM, {})), fit=fit,
            test={name: metrics[test_metric(name)] for name in METRIC_NAMES if test_metric(name) in metrics},
            inputs=tuple(_dataset_ref(entry) for entry in getattr(run.inputs, "dataset_inputs", None) or ()),
            parent_run_id=tags.get(PARENT_TAG, ""), run_id=run.info.run_id, status=run.info.status,
            start_time=run.info.start_time or 0, artifact_uri=run.info.artifact_uri, failure=tags.get(FAILURE_TAG, ""))

    @property
    def placeable(self) -> bool:
        """Whether the run names its place in the grid (written by the harness)."""
        return bool(self.grid and self.cell.backbone and self.role and self.head) and self.cell.split >= 0

    @property
    def expired(self) -> bool:
        """Whether the run ended because its process died (its claim expired), not because of its head."""
        return self.failure.startswith(EXPIRED)

    def as_row(self) -> dict[str, Any]:
        """One flat row for the report's tables (tags, sizes, head hparams, selection, fit and test metrics)."""
        cell = self.cell
        row: dict[str, Any] = {
            "run_id": self.run_id, "status": self.status, "start_time": self.start_time,
            "artifact_uri": self.artifact_uri, "failure": self.failure, "expired": self.expired, "grid": self.grid, "cell_key": cell.key,
            "pair_key": cell.pair_key, "backbone": cell.backbone, "dataset": cell.dataset,
            "test_dataset": cell.test_dataset, "regime": cell.regime, "split": cell.split, "seed": cell.seed,
            "head": self.head, "head_type": self.head_type, "role": self.role, "trial": self.trial,
            "parent_run_id": self.parent_run_id, "head_init": self.head_init,
            **(asdict(self.sizes) if self.sizes else dict.fromkeys(SIZE_COLUMNS, math.nan)),
        }
        row.update({f"{_HEAD_PREFIX}{k}": v for k, v in self.head_hparams.items()})
        row.update({f"{_TUNED_PREFIX}{k}": v for k, v in self.tuned.items()})
        row["trial_scores"] = self.trial_scores
        fit = self.fit or FitSummary(-1, math.nan, math.nan, 0)
        row.update(asdict(fit))
        row.update({test_metric(name): self.test.get(name, math.nan) for name in METRIC_NAMES})
        return row


TUNED_PREFIX = _TUNED_PREFIX
HEAD_PARAM_PREFIX = _HEAD_PREFIX


@dataclass(frozen=True)
class HeadRecord:
    """A head as the grid runs it: its registry type, every hyper-parameter (defaults filled) and its init."""

    type: str
    hparams: dict[str, Any] = field(default_factory=dict)
    init: str = "prior"


@dataclass(frozen=True)
class GridRecord:
    """The grid an experiment runs, as the report needs it (an experiment tag, JSON).

    ``compare`` lists the head pairs (A, B) the report tests; ``tuning`` the values every head's trials
    took per tuned setting (the report checks whether selections sit on its edges).
    """

    name: str
    regime: str
    backbones: tuple[str, ...]
    heads: dict[str, HeadRecord]
    datasets: tuple[tuple[str, str], ...]
    splits: tuple[int, ...]
    seeds: tuple[int, ...]
    rope: float
    compare: tuple[tuple[str, str], ...]
    tuning: dict[str, tuple[float, ...]] = field(default_factory=dict)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_correlation: float | None = None
    """``r`` of the tests; None: each cell's ``n_test / n_train``."""
    random_init: tuple[str, ...] = ()
    """Backbones without pretrained weights: their initial weights, and so their probe, vary with the seed."""

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in the grid's order (backbone, dataset, split, seed)."""
        return [Cell(b, train, test, split, seed, self.regime) for b in self.backbones
                for train, test in self.datasets for split in self.splits for seed in self.seeds]

    def probe_cells(self) -> list[Cell]:
        """The cells that record the closed-form probe, which depends on a cell's data and initial backbone
        only: the first seed's cells, and every seed's for a randomly initialised backbone."""
        return [c for c in self.cells() if c.seed == self.seeds[0] or c.backbone in self.random_init]

    @property
    def reference(self) -> str:
        """The head most pairs compare against (the tables mark the others against it)."""
        others = [b for _, b in self.compare]
        return max(dict.fromkeys(others), key=others.count) if others else ""

    def to_json(self) -> str:
        """The record as JSON text (fits an experiment tag)."""
        data = asdict(self)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GridRecord:
        """Read back :meth:`to_json`'s text."""
        data = json.loads(text)
        heads = {label: HeadRecord(**spec) for label, spec in data.pop("heads").items()}
        return cls(name=data["name"], regime=data["regime"], backbones=tuple(data["backbones"]), heads=heads,
                   datasets=tuple(tuple(pair) for pair in data["datasets"]), splits=tuple(data["splits"]),
                   seeds=tuple(data["seeds"]), rope=float(data["rope"]),
                   compare=tuple(tuple(pair) for pair in data["compare"]),
                   tuning={k: tuple(v) for k, v in data["tuning"].items()},
                   split_fractions=tuple(data["split_fractions"]),
                   split_correlation=data.get("split_correlation"),
                   random_init=tuple(data.get("random_init", ())))

    def assumed_r(self, n_train: float, n_test: float) -> float:
        """The split correlation ``r`` the population target assumes for a cell with these set sizes: the
        grid's ``split_correlation``, else Nadeau and Bengio's ``n_test / n_train``."""
        return self.split_correlation if self.split_correlation is not None else n_test / n_train

    def with_compare(self, pairs: tuple[tuple[str, str], ...]) -> GridRecord:
        """The same grid with other pairs to compare (a report's ``--pair`` override)."""
        return replace(self, compare=tuple(pairs))


BLANK_ROW_COLUMNS = tuple(RunRecord("", Cell("", "", "", -1, -1, ""), "", "", "").as_row())
"""The columns every row of :meth:`RunRecord.as_row` has (head hyper-parameters and tuned values add more)."""


def _dataset_ref(entry: Any) -> DatasetRef:
    """A :class:`DatasetRef` from an MLflow ``DatasetInput`` (as :mod:`benchmark.run.tracking` logs them)."""
    dataset = entry.dataset
    context = next((tag.value for tag in entry.tags if tag.key == DATASET_CONTEXT_TAG), "")
    source = _decode(dataset.source)
    rows = _decode(dataset.profile or "{}")
    return DatasetRef(dataset.name, dataset.digest, source.get("uri", "") if isinstance(source, dict) else str(source),
                      context, int(rows.get("num_rows", 0)) if isinstance(rows, dict) else 0)


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _int(text: str | None) -> int:
    try:
        return int(text) if text is not None else -1
    except ValueError:
        return -1


__all__ = ["BASE_TRIAL", "BLANK_ROW_COLUMNS", "BackboneParams", "CONFIG_ARTIFACT", "CURVES", "Cell", "DATA_CONTEXTS", "DESCRIPTION_TAG", "DIVERGED", "DatasetRef", "EPOCH_TIMES", "EXPIRED",
           "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FAILURE_TAG", "FIT_COLUMNS", "FitSummary", "GRID_TAG",
           "GridRecord", "HEAD_PARAM_PREFIX", "HeadRecord", "PARENT_TAG", "PREDICTIONS_ARTIFACT", "PREDICTION_COLUMNS",
           "PROBE_HEAD", "ROLE_REFERENCE", "ROLE_RESULT", "ROLE_TRIAL", "RunRecord", "SIZE_COLUMNS", "SOURCE", "Sizes",
           "TRACEBACK_ARTIFACT", "TRIAL_SCORES_PARAM", "TUNED_PREFIX", "WEIGHTS_ARTIFACT", "WorkKey", "test_metric", "trial_key", "trial_values"]
