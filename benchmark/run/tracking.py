"""MLflow conventions of the suite: where runs go, how a run is written, and how a grid resumes.

One experiment per grid; per (cell, head) one ``result`` run with its tuning ``trial`` runs as children,
and per cell one ``reference`` run (the linear probe) — the names are in :mod:`benchmark.schema`.
Every run carries the tags of ``RUN_TAGS``, every hyper-parameter as a param, per-epoch curves; result
and reference runs the final ``test_*`` metrics and the artifacts ``predictions.csv`` (image, mos,
pred), ``config.yaml`` and the trained weights (``head.pt`` in the frozen regime, ``model.pt`` in
fine-tuning). A run that raises ends FAILED with the message as its ``failure`` tag and the traceback
as ``traceback.txt``.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from benchmark.run.claims import KILLED, Claim
from benchmark.schema import FAILURE_TAG, PREDICTIONS_ARTIFACT, ROLE_RESULT, ROLE_TRIAL, TRACEBACK_ARTIFACT, TRIAL_TAG
from benchmark.run.store import ensure_experiment

log = logging.getLogger(__name__)

DEFAULT_STORE_DIR = Path("mlruns")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Return the tracking URI: the argument, else ``MLFLOW_TRACKING_URI``, else ``./mlruns/mlflow.db``.

    The default is a SQLite file (MLflow 3's default backend) in the git-ignored folder ``mlruns/``
    under the current directory; its parent folder is created when missing.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE_DIR.resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def uri_kind(uri: str) -> str:
    """Short description of a tracking URI's backend (``sqlite``, ``http``, ``file``, ...)."""
    return uri.split(":", 1)[0] if ":" in uri else "file"


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store live beside the database; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / experiment
        return folder.resolve().as_uri()
    return None


def get_experiment_id(client: MlflowClient, uri: str, grid: str, create: bool = True) -> str | None:
    """Id of the experiment named after the grid, created on first use when ``create`` (race-safe)."""
    if not create:
        experiment = client.get_experiment_by_name(grid)
        return None if experiment is None else experiment.experiment_id
    return ensure_experiment(client, grid, artifact_location=_artifact_location(uri, grid))


def work_key(tags: dict[str, str]) -> tuple[str, str, str, str]:
    """The unit of work a run holds: (role, cell_key, head, trial); ``trial`` is empty but for trial runs
    (a result run's trial tag names the trial it selected); runs without a role are results."""
    role = tags.get("role", ROLE_RESULT)
    return (role, tags.get("cell_key", ""), tags.get("head", ""), tags.get(TRIAL_TAG, "") if role == ROLE_TRIAL else "")


def finished_config_hashes(client: MlflowClient, experiment_id: str) -> dict[tuple[str, str, str, str], str]:
    """The FINISHED runs' config hashes, ``{work_key: config_hash}`` (:func:`work_key`).

    Runs left RUNNING are not touched here: a live one belongs to another process working on the grid
    right now, a dead one is taken over by :mod:`benchmark.run.claims` once its heartbeat has expired.
    """
    return {work_key(run.data.tags): run.data.tags.get("config_hash", "")
            for run in _all_runs(client, experiment_id) if run.info.status == "FINISHED"}


def _all_runs(client: MlflowClient, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=5000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


@dataclass
class RunRecorder:
    """Writes one run that a :class:`benchmark.run.claims.Claim` holds: params on entry, metrics and artifacts
    inside the block, the end status on exit.

    An exception inside the ``with`` block ends the run FAILED with the message as the ``failure`` tag and
    the traceback as an artifact, then propagates; a ``KeyboardInterrupt`` ends it KILLED. A run whose
    claim was expired meanwhile by another process ends FAILED (its result is void; the item is redone).
    """

    claim: Claim
    tags: dict[str, str]
    params: dict[str, object]
    failed: bool = field(init=False, default=False)

    @property
    def client(self) -> MlflowClient:
        """The store's client."""
        return self.claim.client

    @property
    def run_id(self) -> str:
        """The claimed run."""
        return self.claim.run_id

    def __enter__(self) -> "RunRecorder":
        self.log_params(self.params)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, Exception):
            self.fail(f"{exc_type.__name__}: {exc}")
            self.log_text("".join(traceback.format_exception(exc_type, exc, tb)), TRACEBACK_ARTIFACT)
        elif exc_type is not None:
            self.claim.finish(KILLED)
            return
        self.claim.finish("FAILED" if self.failed else "FINISHED")

    def log_params(self, params: dict[str, object]) -> None:
        """Log params (values longer than MLflow's limit are cut), 100 per call."""
        batch = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[start:start + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set tags on the open run."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def fail(self, reason: str) -> None:
        """End the run as FAILED (tag ``failure``) without raising: the grid goes on with other runs."""
        log.warning("run %s (%s, %s) failed: %s", self.run_id, self.tags["cell_key"], self.tags["head"], reason)
        self.client.set_tag(self.run_id, FAILURE_TAG, reason[:5000])
        self.failed = True

    def log_curves(self, curves: dict[str, list[float]]) -> None:
        """Log per-epoch curves (step = epoch index) in one batch per 1000 points."""
        now = int(time.time() * 1000)
        points = [Metric(name, float(v), now, step) for name, values in curves.items()
                  for step, v in enumerate(values)]
        for start in range(0, len(points), 1000):
            self.client.log_batch(self.run_id, metrics=points[start:start + 1000])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Log final scalar metrics."""
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def log_predictions(self, predictions: pd.DataFrame) -> None:
        """Store the test predictions (columns image, mos, pred) as ``predictions.csv``."""
        self.client.log_text(self.run_id, predictions.to_csv(index=False), PREDICTIONS_ARTIFACT)

    def log_text(self, text: str, name: str) -> None:
        """Store a text artifact."""
        self.client.log_text(self.run_id, text, name)

    def log_state(self, state: dict, name: str) -> None:
        """Store a ``torch.save`` file (weights and what is needed to rebuild them) as an artifact."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(buffer.getvalue())
            self.client.log_artifact(self.run_id, str(path))
