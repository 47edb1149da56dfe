"""Where runs go and how a claimed run is written: the thin MLflow layer over :class:`benchmark.schema.RunRecord`.

One experiment per grid. It carries the grid (:class:`benchmark.schema.GridRecord`, which the report reads
to know the expected cells, heads, pairs and ROPE), a description (the grid's YAML and the command that ran
it), tags (``grid``, ``regime``, the suite's version) and MLflow's experiment kind, so the UI opens on the
training runs. A run is claimed with its record's tags (:func:`claim`), and written in one batch when its
work is done (:class:`RunWriter`): params, final metrics and curves, its train/val/test tables as dataset
inputs, artifacts. A run that raises ends FAILED with the message as its ``failure`` tag and the traceback
as ``traceback.txt``; an interrupted one ends KILLED.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark.config import GridConfig
from benchmark.heads import head_hparams
from benchmark.provenance import git_sha
from benchmark.run.claims import Claim, ClaimBook, Outcome
from benchmark.schema import (
    DATASET_CONTEXT_TAG,
    DESCRIPTION_TAG,
    FAILED,
    FINISHED,
    KILLED,
    PROBE_HEAD,
    RUN_NAME_TAG,
    TAGS,
    TRACEBACK_ARTIFACT,
    BackboneParams,
    Cell,
    DatasetRef,
    HeadSpec,
    RunRecord,
    Sizes,
    WorkKey,
)
from benchmark.store import (
    DATASET_RACE_ATTEMPTS,
    all_runs,
    ensure_experiment,
    is_dataset_race,
)

log = logging.getLogger(__name__)

MAX_PARAMS, MAX_METRICS = 100, 900
"""Params and metrics per ``log_batch`` call (MLflow takes at most 100 params and 1000 entities in all)."""


def suite_version() -> str:
    """The installed version of the suite (``unknown`` when it runs from an uninstalled checkout)."""
    try:
        return version("dor-iqa-bench")
    except PackageNotFoundError:
        return "unknown"


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / experiment
        return folder.resolve().as_uri()
    return None


def open_experiment(client: MlflowClient, uri: str, grid: GridConfig, command: str) -> str:
    """Id of the grid's experiment, created on first use (race-safe), with the grid recorded on it.

    The grid record, description and tags are (re)written on every launch, so the report follows the
    grid as last run (a grid that added splits, or changed ``compare`` or ``rope``).
    """
    experiment_id = ensure_experiment(client, grid.name, artifact_location=_artifact_location(uri, grid.name))
    description = (f"DOR-IQA benchmark grid `{grid.name}` ({grid.source}), run with:\n\n    {command}\n\n"
                   f"Resolved grid:\n\n```yaml\n{grid.to_yaml()}```\n")
    for key, value in grid.record().experiment_tags(description, suite_version()).items():
        client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


def find_experiment(client: MlflowClient, name: str) -> str | None:
    """Id of the experiment ``name``, or None."""
    experiment = client.get_experiment_by_name(name)
    return None if experiment is None else experiment.experiment_id


def finished_units(client: MlflowClient, experiment_id: str) -> dict[WorkKey, str]:
    """The FINISHED runs' config hashes, ``{work key: config_hash}``.

    Runs left RUNNING are not touched here: a live one belongs to another process working on the grid
    right now, a dead one is taken over by :mod:`benchmark.run.claims` once its heartbeat has expired.
    """
    return {record.work_key(): record.config_hash for record in map(RunRecord.from_mlflow, all_runs(client, experiment_id))
            if record.status == FINISHED}


def new_record(grid: GridConfig, cell: Cell, head_spec: HeadSpec, role: str, tuning: tuple[str, ...], *,
               backbone: BackboneParams, init_hash: str, order_hash: str, image_policies: dict[str, str],
               sizes: Sizes, inputs: tuple[DatasetRef, ...], **fields) -> RunRecord:
    """The record of a run of ``head_spec`` in ``cell``: what the grid decides, plus what the caller measured.

    Every writer (the cell, the synthetic store) builds its records here, so their runs carry the same
    names. ``tuning`` lists the trial keys of the head's budget (the probe's: its penalties).
    """
    probe = head_spec.type == PROBE_HEAD
    return RunRecord(
        grid=grid.name, cell=cell, head=head_spec.label, head_type=head_spec.type, role=role, git_sha=git_sha(),
        init_hash=init_hash, order_hash=order_hash, config_hash=grid.run_config_hash(cell, head_spec),
        settings=grid.hyperparameters(probe), backbone=backbone,
        image_policies=image_policies, sizes=sizes, head_hparams={} if probe else {**head_hparams(head_spec.type),
                                                                                    **head_spec.hparams},
        head_init="" if probe else head_spec.init, tuning=tuning, inputs=inputs, **fields)


def claim(book: ClaimBook, record: RunRecord) -> Claim | Outcome:
    """Claim the unit of work ``record`` holds, creating its run with the record's tags."""
    tags = record.tags()
    tags.pop(RUN_NAME_TAG)
    return book.try_claim(record.work_key().tags(), tags, run_name=record.run_name,
                          parent_run_id=record.parent_run_id or None)


def log_record(client: MlflowClient, run_id: str, record: RunRecord) -> None:
    """Log a record into its (created) run in a few batched calls: params, final metrics and curves, the tags
    set after creation (a result's selected trial), and its parts of the split as dataset inputs."""
    tags, params, metrics = record.to_mlflow()
    now = int(time.time() * 1000)
    params_list = [Param(k, v[:6000]) for k, v in sorted(params.items())]
    points = [Metric(name, value, now, step) for name, value, step in metrics]
    batches = list(itertools.zip_longest(_chunks(params_list, MAX_PARAMS), _chunks(points, MAX_METRICS),
                                         fillvalue=[])) or [([], [])]
    late_tags = [RunTag(k, v) for k, v in tags.items() if k == TAGS.trial] + [RunTag(DESCRIPTION_TAG, record.description)]
    for index, (params_batch, metrics_batch) in enumerate(batches):
        client.log_batch(run_id, params=params_batch, metrics=metrics_batch, tags=late_tags if index == 0 else [])
    if record.inputs:
        datasets = [DatasetInput(Dataset(ref.name, ref.digest, "local", json.dumps({"uri": ref.source}),
                                         profile=json.dumps({"num_rows": ref.rows})),
                                 tags=[InputTag(DATASET_CONTEXT_TAG, ref.context)]) for ref in record.inputs]
        for attempt in range(DATASET_RACE_ATTEMPTS):
            try:
                client.log_inputs(run_id, datasets=datasets)
                break
            except MlflowException as err:
                if not is_dataset_race(err) or attempt + 1 == DATASET_RACE_ATTEMPTS:
                    raise


def create_run(client: MlflowClient, experiment_id: str, record: RunRecord) -> str:
    """Create a run named and tagged by its record, without a claim (the synthetic store's writes)."""
    tags = record.tags()
    name = tags.pop(RUN_NAME_TAG)
    return client.create_run(experiment_id, tags=tags, run_name=name).info.run_id


def _chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


class RunWriter:
    """Writes one claimed run; use it as a context manager around the run's work.

    An exception inside the block ends the run FAILED with the message as the ``failure`` tag and the
    traceback as an artifact, then propagates; a ``KeyboardInterrupt`` ends it KILLED; otherwise it ends
    FINISHED (FAILED after :meth:`fail`, or when another process expired the claim meanwhile).
    """

    def __init__(self, claimed: Claim) -> None:
        self.claim = claimed
        self.failed = False

    @property
    def client(self) -> MlflowClient:
        """The store's client."""
        return self.claim.client

    @property
    def run_id(self) -> str:
        """The claimed run."""
        return self.claim.run_id

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, Exception):
            self.end_with(exc)
        elif exc_type is not None:
            self.claim.finish(KILLED)
        else:
            self.claim.finish(FAILED if self.failed else FINISHED)

    def end_with(self, exc: Exception) -> None:
        """End the run FAILED by ``exc``: its message as the ``failure`` tag, its traceback as an artifact."""
        self.fail(f"{type(exc).__name__}: {exc}")
        self.text("".join(traceback.format_exception(exc)), TRACEBACK_ARTIFACT)
        self.claim.finish(FAILED)

    def write(self, record: RunRecord) -> None:
        """Log the record's params, metrics, curves, late tags and dataset inputs (:func:`log_record`)."""
        log_record(self.client, self.run_id, record)

    def fail(self, reason: str) -> None:
        """End the run as FAILED (tag ``failure``) without raising: the grid goes on with other runs."""
        log.warning("run %s failed: %s", self.run_id, reason)
        self.client.set_tag(self.run_id, TAGS.failure, reason[:5000])
        self.failed = True

    def text(self, text: str, name: str) -> None:
        """Store a text artifact."""
        self.client.log_text(self.run_id, text, name)

    def file(self, data: bytes, name: str) -> None:
        """Store a binary artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(self.run_id, str(path))


__all__ = ["RunWriter", "claim", "create_run",
           "find_experiment", "finished_units", "log_record", "new_record", "open_experiment", "suite_version"]
