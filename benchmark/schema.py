"""The run record: every tag, param, metric, curve and artifact name of a grid's MLflow runs, in one place.

A grid's experiment holds three kinds of runs, told apart by their ``role``:

* ``result`` — one per (cell, head): the selected tuning trial, scored once on the test split; the
  statistics and tables use these only;
* ``trial`` — one per (cell, head, tuning trial): a child run of its result run (``mlflow.parentRunId``),
  trained and scored on val only;
* ``reference`` — the closed-form linear probe (head label ``probe``), one per split and initial backbone:
  a yardstick for the trained heads, never in the tests between heads.

Each field of a :class:`RunRecord` is declared once with its MLflow role (:func:`declare`: tag, param, metric,
curve, run info or dataset input); its tags, params, metrics, row and names (:data:`TAGS`, :data:`PARAMS`,
:data:`COLUMNS`) derive from the declarations. Every writer (the harness, the synthetic store, the calibration
scripts) builds a record and calls :meth:`RunRecord.to_mlflow`; every reader (the report, ``predict``) calls
:meth:`RunRecord.from_mlflow`. No other module spells a tag, param, metric, column or artifact name (a test
checks), so writers and readers cannot drift apart. The grid
itself is recorded once per experiment (:class:`GridRecord`, an experiment tag), so a report knows the
expected cells, the heads, the pairs to compare and the ROPE without guessing them from the runs.

This module imports neither torch nor MLflow: the report's side of the suite runs without them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

from benchmark.metrics import METRIC_NAMES

ROLE_RESULT, ROLE_TRIAL, ROLE_REFERENCE = "result", "trial", "reference"
PROBE_HEAD = "probe"
"""Head label (and head type) of the linear-probe reference run."""
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
"""MLflow's run statuses (a record's ``status``)."""
DIVERGED = "diverged:"
"""Start of the ``failure`` tag of a run whose model diverged (non-finite predictions)."""
EXPIRED = "claim expired:"
"""Start of the ``failure`` tag of a run whose process stopped heartbeating (killed, not failed by its head)."""
RUN_NAME_TAG = "mlflow.runName"
SOURCE_TAG = "mlflow.source.name"
SOURCE = "dor-bench"
GRID_TAG = "dor.grid"
"""Experiment tag holding the :class:`GridRecord` (JSON) of the grid the experiment runs."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""Makes MLflow 3's UI open the experiment on its training runs, not on the GenAI traces overview."""
SUITE_VERSION_TAG = "suite_version"
"""Experiment tag: the installed version of the suite that last launched the grid."""
DESCRIPTION_TAG = "mlflow.note.content"
CLAIM_PREFIX = "claim."
"""Start of the tags of the claim protocol (:mod:`benchmark.run.claims`) on a claimed run."""
OWNER_TAG, HEARTBEAT_TAG, EXPIRED_TAG = (f"{CLAIM_PREFIX}{name}" for name in ("owner", "heartbeat", "expired_by"))
"""The process holding a claim, its last heartbeat (epoch seconds), and who expired it."""

TRAIN_LOSS, VAL_SRCC = CURVES = ("train_loss", "val_srcc")
"""Per-epoch learning curves (step = epoch)."""
TRAIN_S, VAL_S, INPUT_WAIT_S = EPOCH_TIMES = ("train_s", "val_s", "input_wait_s")
"""Per-epoch wall seconds (step = epoch): training steps, validation, and the part of the training time spent
waiting for the next batch's inputs (what a faster loader or prefetching could win back). Frozen-regime models
trained together share their epochs' seconds."""
PREDICTIONS_ARTIFACT = "predictions.csv"
"""Test predictions: columns :data:`PREDICTION_COLUMNS`."""
CONFIG_ARTIFACT = "config.yaml"
TRACEBACK_ARTIFACT = "traceback.txt"
WEIGHTS_ARTIFACT = "model.pt"
"""The trained model and what is needed to rebuild it (:mod:`benchmark.bundle`)."""
DATA_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
"""MLflow dataset-input context of each part of a split."""
DATASET_CONTEXT_TAG = "mlflow.data.context"

TEST_PREFIX, HEAD_PARAM_PREFIX, POLICY_PREFIX, BACKBONE_PREFIX, TUNED_PREFIX = (
    "test_", "head.", "image_policy.", "backbone.", "tuned.")
BASE_TRIAL = "base"
"""The key of the one trial of a grid without tuning."""


class Names(tuple):
    """Declared names in order, each also read as an attribute: ``COLUMNS.pair_key == "pair_key"``,
    ``TAGS.parent_run_id == "mlflow.parentRunId"``; an undeclared attribute raises ``AttributeError``."""

    def __new__(cls, names: Mapping[str, str] | Iterable[str]) -> Names:
        mapping = dict(names) if isinstance(names, Mapping) else {name: name for name in names}
        self = super().__new__(cls, mapping.values())
        self.__dict__.update(mapping)
        return self

    def __getattr__(self, attribute: str) -> str:
        raise AttributeError(f"no declared name {attribute!r}")


PREDICTION_COLUMNS = Names(("image", "mos", "pred", "ref"))
"""Columns of :data:`PREDICTIONS_ARTIFACT`: the label table's ``image``, ``mos`` and ``ref`` (the image's content
group) of each test image, and the model's ``pred`` (on the MOS scale, unclamped)."""

TAG, PARAM, METRIC, CURVE, INFO, INPUT = "tag", "param", "metric", "curve", "info", "input"
"""The MLflow roles of a record's fields: a run tag, a param, a final metric (step 0), metrics per epoch (step =
epoch), the run's own info (read only) and its dataset inputs."""


def declare(role: str, name: str = "", *, prefix: str | None = None, of: type | None = None, sparse: bool = False,
            column: bool = True, blank: Mapping[str, Any] | None = None, written: bool = True, **default: Any) -> Any:
    """A record field declared with its MLflow role: the tags, params, metrics, row and names of a record derive
    from these declarations alone.

    Parameters
    ----------
    role : str
        ``TAG``, ``PARAM``, ``METRIC``, ``CURVE``, ``INFO`` or ``INPUT``.
    name : str
        Its MLflow name (default: the field's name, which is also its column).
    prefix : str, optional
        A field holding several values (a dict, or a dataclass ``of``) gives one name per entry: ``prefix``
        and the entry's name. One dict may have an empty prefix: it holds the names no other field declares.
    sparse : bool
        Written only when set (non-empty).
    column : bool
        Whether :meth:`RunRecord.as_row` has it.
    blank : mapping, optional
        The entries of its columns where it holds nothing (a run without a fit, a test metric not logged).
    written : bool
        Whether :meth:`RunRecord.to_mlflow` writes it (``False``: another writer sets it, the record reads it).
    **default
        ``default`` or ``default_factory``, as for :func:`dataclasses.field`.
    """
    return field(metadata={"role": role, "name": name, "prefix": prefix, "of": of, "sparse": sparse,
                           "column": column, "blank": blank or {}, "written": written}, **default)


def _declared(cls: type, role: str) -> list[Field]:
    return [f for f in fields(cls) if f.metadata.get("role") == role]


def _name(declared: Field) -> str:
    return declared.metadata["name"] or declared.name


def _default(declared: Field) -> Any:
    if declared.default is not MISSING:
        return declared.default
    return declared.default_factory() if declared.default_factory is not MISSING else ""


def _entries(declared: Field, value: Any) -> dict[str, Any]:
    """``{MLflow name: value}`` of a declared field's value (none for an unset sparse field)."""
    prefix = declared.metadata["prefix"]
    if prefix is None:
        return {} if declared.metadata["sparse"] and not value else {_name(declared): value}
    if isinstance(value, Cell):
        value = value.tags()
    elif is_dataclass(value):
        value = asdict(value)
    return {f"{prefix}{key}": entry for key, entry in (value or {}).items()}


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


def _field_names(cls: type) -> tuple[str, ...]:
    """The field names of a dataclass (the columns it flattens to)."""
    return tuple(f.name for f in fields(cls))


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
    return f"{TEST_PREFIX}{name}"


_CELL_KEY, _PAIR_KEY = "cell_key", "pair_key"
"""Tags (and columns) of a cell's :attr:`Cell.key` and :attr:`Cell.pair_key`."""


@dataclass(frozen=True)
class Cell:
    """One (backbone, train dataset, test dataset, split, seed, regime): all heads of a cell are matched.

    Each field is a tag of the cell's runs, as are its two keys (``cell_key``, ``pair_key``).
    """

    backbone: str = declare(TAG)
    dataset: str = declare(TAG)
    test_dataset: str = declare(TAG)
    split: int = declare(TAG)
    seed: int = declare(TAG)
    regime: str = declare(TAG)

    @property
    def pair_key(self) -> str:
        """The comparison group (backbone, datasets, regime) whose per-split differences the statistics test."""
        return f"{self.backbone}|{self.dataset}->{self.test_dataset}|{self.regime}"

    @property
    def key(self) -> str:
        """Readable unique key, logged as the ``cell_key`` tag (a display string: seeds never derive from it)."""
        return f"{self.pair_key}|split{self.split}|seed{self.seed}"

    def tags(self) -> dict[str, Any]:
        """The cell's tags, typed (split and seed are ints)."""
        return {_CELL_KEY: self.key, _PAIR_KEY: self.pair_key, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Cell:
        """The cell a run's tags name (empty names and split/seed -1 where a tag is missing)."""
        return cls(**{f.name: _int(tags.get(f.name)) if f.type == "int" else tags.get(f.name, "")
                      for f in fields(cls)})


@dataclass(frozen=True)
class WorkKey:
    """One unit of work, done exactly once: (role, cell, head) and, for a tuning trial, the trial.

    Its fields are the record's tags of the same names (what a claim searches for)."""

    role: str = declare(TAG)
    cell_key: str = declare(TAG)
    head: str = declare(TAG)
    trial: str = declare(TAG, sparse=True, default="")

    def tags(self) -> dict[str, str]:
        """The tags that name the unit."""
        return {k: v for f in _declared(WorkKey, TAG) for k, v in _entries(f, getattr(self, f.name)).items()}


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

    def metrics(self) -> dict[str, float]:
        """The values a run logs: unset ones (NaN, the probe's epoch -1) are left out."""
        return {k: v for k, v in asdict(self).items()
                if not (isinstance(v, float) and math.isnan(v)) and not (k == "best_epoch" and v < 0)}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> FitSummary | None:
        """Read back :meth:`metrics` (None for a run that logged no val SRCC: it recorded no fit)."""
        values = {f.name: int(metrics[f.name]) if f.type == "int" else metrics[f.name] for f in fields(cls)
                  if f.name in metrics}
        return replace(_BLANK_FIT, **values) if "best_val_srcc" in values else None


_BLANK_FIT = FitSummary(-1, math.nan, math.nan)
"""The row of a run without a fit."""


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
    """Everything one MLflow run of a grid carries, each field declared once with its MLflow role.

    Writers fill the fields and call :meth:`to_mlflow`; readers get them back from :meth:`from_mlflow`
    (the ``INFO`` fields and ``failure`` are filled on reading). ``settings`` are the grid's training settings
    (the probe's record holds only those it uses; a tuned one is logged under ``tuned.``), ``tuned`` the values
    of the trial (a result run: the selected trial's), ``tuning`` every trial key of the budget.
    """

    grid: str = declare(TAG)
    cell: Cell = declare(TAG, prefix="", of=Cell)
    head: str = declare(TAG)
    head_type: str = declare(TAG)
    role: str = declare(TAG)
    trial: str = declare(TAG, sparse=True, default="")
    git_sha: str = declare(TAG, column=False, default="")
    init_hash: str = declare(TAG, column=False, default="")
    order_hash: str = declare(TAG, column=False, default="")
    config_hash: str = declare(TAG, column=False, default="")
    settings: dict[str, Any] = declare(PARAM, prefix="", column=False, default_factory=dict)
    backbone: BackboneParams | None = declare(PARAM, prefix=BACKBONE_PREFIX, of=BackboneParams, column=False,
                                              default=None)
    image_policies: dict[str, str] = declare(PARAM, prefix=POLICY_PREFIX, column=False, default_factory=dict)
    sizes: Sizes | None = declare(PARAM, prefix="", of=Sizes, blank=dict.fromkeys(_field_names(Sizes), math.nan),
                                  default=None)
    head_hparams: dict[str, Any] = declare(PARAM, prefix=HEAD_PARAM_PREFIX, default_factory=dict)
    head_init: str = declare(PARAM, f"{HEAD_PARAM_PREFIX}init", sparse=True, default="")
    tuning: tuple[str, ...] = declare(PARAM, sparse=True, column=False, default=())
    tuned: dict[str, float] = declare(PARAM, prefix=TUNED_PREFIX, default_factory=dict)
    trial_scores: dict[str, float] = declare(PARAM, "tuning.val_srcc", sparse=True, default_factory=dict)
    """A result run's evidence for its selection: every trial's val SRCC (trial key -> value)."""
    fit: FitSummary | None = declare(METRIC, prefix="", of=FitSummary, blank=asdict(_BLANK_FIT), default=None)
    test: dict[str, float] = declare(METRIC, prefix=TEST_PREFIX, blank=dict.fromkeys(METRIC_NAMES, math.nan),
                                     default_factory=dict)
    curves: dict[str, list[float]] = declare(CURVE, prefix="", column=False, default_factory=dict)
    """:data:`CURVES` and :data:`EPOCH_TIMES`, one value per epoch."""
    inputs: tuple[DatasetRef, ...] = declare(INPUT, column=False, default=())
    parent_run_id: str = declare(TAG, "mlflow.parentRunId", sparse=True, default="")
    run_id: str = declare(INFO, default="")
    status: str = declare(INFO, default="")
    start_time: int = declare(INFO, default=0)
    artifact_uri: str = declare(INFO, default="")
    failure: str = declare(TAG, written=False, default="")
    """Why a run ended FAILED (the exception, the divergence or the expired claim): its writer or the claim that
    expired it sets the tag."""

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

    def _values(self, role: str) -> dict[str, Any]:
        """``{MLflow name: value}`` of the fields this record writes with ``role``."""
        return {k: v for f in _declared(RunRecord, role) if f.metadata["written"]
                for k, v in _entries(f, getattr(self, f.name)).items()}

    def tags(self) -> dict[str, str]:
        """Tags set when the run is created (they name it: claims search them), with its name and source."""
        return {**{k: str(v) for k, v in self._values(TAG).items()}, RUN_NAME_TAG: self.run_name, SOURCE_TAG: SOURCE}

    def params(self) -> dict[str, str]:
        """Every param, as MLflow stores them (JSON text for non-strings, so they read back typed)."""
        values = {k: v for k, v in self._values(PARAM).items() if k not in self.tuned}
        return {k: _encode(v) for k, v in values.items()}

    def metrics(self) -> list[tuple[str, float, int]]:
        """``(name, value, step)`` of every metric: final values at step 0, curves at step = epoch."""
        fit = self.fit.metrics() if self.fit is not None else {}
        finals = {**{test_metric(k): v for k, v in self.test.items()}, **fit}
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
        data = run.data
        sources = {TAG: data.tags, PARAM: {k: _decode(v) for k, v in data.params.items()}, METRIC: data.metrics}
        values = {}
        for role, source in sources.items():
            values.update(_read(_declared(cls, role), source))
        values.update({f.name: getattr(run.info, f.name) or _default(f) for f in _declared(cls, INFO)})
        inputs = getattr(run.inputs, "dataset_inputs", None) or ()
        return cls(**values, inputs=tuple(_dataset_ref(entry) for entry in inputs))

    @property
    def placeable(self) -> bool:
        """Whether the run names its place in the grid (written by the harness)."""
        return bool(self.grid and self.cell.backbone and self.role and self.head) and self.cell.split >= 0

    @property
    def expired(self) -> bool:
        """Whether the run ended because its process died (its claim expired), not because of its head."""
        return self.failure.startswith(EXPIRED)

    def as_row(self) -> dict[str, Any]:
        """One flat row for the report's tables: each declared column (a field by its own name, a dict or
        dataclass as one column per entry, blanks where it holds nothing) and ``expired``."""
        row: dict[str, Any] = {}
        for declared in fields(self):
            value = getattr(self, declared.name)
            if not declared.metadata["column"]:
                continue
            if declared.metadata["prefix"] is None:
                row[declared.name] = value
            else:
                row.update({**_entries(declared, declared.metadata["blank"]), **_entries(declared, value)})
        row["expired"] = self.expired
        return row


def _read(declared: list[Field], source: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``declared`` fields from a run's tags, params or metrics, ``{field name: value}``.

    Each MLflow name belongs to one field: the field of that name, else the dataclass field whose entry it
    names, else the field with the longest prefix it starts with, else the one with an empty prefix (the rest).
    """
    names: dict[str, tuple[str, str]] = {}
    prefixes: list[tuple[str, str]] = []
    for f in declared:
        prefix, of = f.metadata["prefix"], f.metadata["of"]
        if prefix is None:
            names[_name(f)] = f.name, ""
        elif of is not None:
            names.update({f"{prefix}{entry}": (f.name, entry) for entry in _field_names(of)})
        else:
            prefixes.append((prefix, f.name))
    prefixes.sort(key=lambda pair: -len(pair[0]))
    owned: dict[str, dict[str, Any]] = {f.name: {} for f in declared}
    for name, value in source.items():
        owner, entry = names.get(name) or next(((f, name.removeprefix(p)) for p, f in prefixes if name.startswith(p)),
                                               (None, ""))
        if owner is not None:
            owned[owner][entry] = value
    values = {}
    for f in declared:
        entries, of = owned[f.name], f.metadata["of"]
        if f.metadata["prefix"] is None:
            default = _default(f)
            values[f.name] = type(default)(entries[""]) if "" in entries else default
        elif of is Cell:
            values[f.name] = Cell.from_tags(entries)
        elif of is FitSummary:
            values[f.name] = FitSummary.from_metrics(entries)
        elif of is not None:
            values[f.name] = of(**entries) if entries.keys() == set(_field_names(of)) else None
        else:
            values[f.name] = entries
    return values


def _names(role: str) -> dict[str, str]:
    """``{field or entry: MLflow name}`` of the fields declared with ``role``."""
    out = {}
    for f in _declared(RunRecord, role):
        prefix, of = f.metadata["prefix"], f.metadata["of"]
        if prefix is None:
            out[f.name] = _name(f)
        elif of is not None:
            entries = Cell.from_tags({}).tags() if of is Cell else _field_names(of)
            out.update({entry: f"{prefix}{entry}" for entry in entries})
    return out


TAGS = Names(_names(TAG))
"""Every run tag of a record by its field (``TAGS.head``, ``TAGS.parent_run_id``), the cell's included."""
PARAMS = Names(_names(PARAM))
"""The params of fixed name (``PARAMS.head_init == "head.init"``, ``PARAMS.n_train``); the others are
``settings`` and the prefixed groups (:data:`HEAD_PARAM_PREFIX`, :data:`TUNED_PREFIX`, ...)."""
BLANK_ROW_COLUMNS = tuple(RunRecord("", Cell("", "", "", -1, -1, ""), "", "", "").as_row())
"""The columns every row of :meth:`RunRecord.as_row` has (head hyper-parameters and tuned values add more)."""
COLUMNS = Names(BLANK_ROW_COLUMNS)
"""Those columns by name (``COLUMNS.pair_key``)."""
FIT_COLUMNS = _field_names(FitSummary)
"""Metrics of a training run's outcome (and columns of :meth:`RunRecord.as_row`)."""
SIZE_COLUMNS = _field_names(Sizes)
@dataclass(frozen=True)
class HeadSpec:
    """A head of a grid: its label there, its registry type, its hyper-parameters and its init.

    ``init``: ``prior`` calls the head's ``init_prior`` with the training targets (the default: no head
    starts far from the data), ``default`` keeps PyTorch's init (the published recipe). A grid file's head
    holds the hyper-parameters it sets; the :class:`GridRecord`'s holds every one, defaults filled.
    """

    label: str
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
    heads: dict[str, HeadSpec]
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
        for head in data["heads"].values():  # the key is the label: the JSON reads as it did before HeadSpec
            del head["label"]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GridRecord:
        """Read back :meth:`to_json`'s text."""
        data = json.loads(text)
        heads = {label: HeadSpec(**{**spec, "label": label}) for label, spec in data.pop("heads").items()}
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

    def experiment_tags(self, description: str, suite_version: str) -> dict[str, str]:
        """The tags of the grid's experiment: this record, the grid's name and regime (as its runs' tags name
        them), the suite's version, a description and MLflow's experiment kind."""
        return {GRID_TAG: self.to_json(), EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, DESCRIPTION_TAG: description,
                TAGS.grid: self.name, TAGS.regime: self.regime, SUITE_VERSION_TAG: suite_version}

    def with_compare(self, pairs: tuple[tuple[str, str], ...]) -> GridRecord:
        """The same grid with other pairs to compare (a report's ``--pair`` override)."""
        return replace(self, compare=tuple(pairs))


__all__ = ["BACKBONE_PREFIX", "BASE_TRIAL", "BLANK_ROW_COLUMNS", "BackboneParams",
           "CLAIM_PREFIX", "COLUMNS", "CONFIG_ARTIFACT", "CURVE", "CURVES", "Cell", "DATASET_CONTEXT_TAG",
           "DATA_CONTEXTS", "DESCRIPTION_TAG", "DIVERGED", "DatasetRef", "EPOCH_TIMES", "EXPERIMENT_KIND",
           "EXPERIMENT_KIND_TAG", "EXPIRED", "EXPIRED_TAG", "FAILED", "FINISHED", "FIT_COLUMNS", "FitSummary",
           "GRID_TAG", "GridRecord", "HEAD_PARAM_PREFIX", "HEARTBEAT_TAG", "HeadSpec", "INFO", "INPUT",
           "INPUT_WAIT_S", "KILLED", "METRIC", "Names", "OWNER_TAG", "PARAM", "PARAMS",
           "POLICY_PREFIX", "PREDICTIONS_ARTIFACT", "PREDICTION_COLUMNS", "PROBE_HEAD", "ROLE_REFERENCE",
           "ROLE_RESULT", "ROLE_TRIAL", "RUNNING", "RUN_NAME_TAG", "RunRecord", "SIZE_COLUMNS", "SOURCE",
           "SOURCE_TAG", "SUITE_VERSION_TAG", "Sizes", "TAG", "TAGS", "TEST_PREFIX", "TRACEBACK_ARTIFACT",
           "TRAIN_LOSS", "TRAIN_S", "TUNED_PREFIX", "VAL_S", "VAL_SRCC", "WEIGHTS_ARTIFACT", "WorkKey",
           "declare", "test_metric", "trial_key", "trial_values"]
