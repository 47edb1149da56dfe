"""MLflow conventions of the suite: where runs go, what each run carries, and how a grid resumes.

One experiment per grid; one flat run per (cell, head). Every run carries the tags in ``RUN_TAGS``,
every hyper-parameter as a param, per-epoch curves and the final ``test_*`` metrics, and the artifacts
``predictions.csv`` (image, mos, pred), ``config.yaml`` and the trained weights (``head.pt`` in the
frozen regime, ``model.pt`` in fine-tuning).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient


log = logging.getLogger(__name__)

DEFAULT_STORE_DIR = Path("mlruns")
RUN_TAGS = (
    "grid", "cell_key", "pair_key", "backbone", "dataset", "test_dataset", "head", "head_type",
    "regime", "split", "seed", "git_sha", "init_hash", "order_hash", "config_hash",
)
TEST_METRICS = ("srcc", "krcc", "plcc", "plcc_raw", "rmse", "mae")
PREDICTIONS_ARTIFACT = "predictions.csv"


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
    """Id of the experiment named after the grid, created on first use when ``create``."""
    experiment = client.get_experiment_by_name(grid)
    if experiment is not None:
        return experiment.experiment_id
    if not create:
        return None
    return client.create_experiment(grid, artifact_location=_artifact_location(uri, grid))


def prepare_resume(client: MlflowClient, experiment_id: str, mark_crashed: bool = True) -> dict[tuple[str, str], str]:
    """Mark runs left RUNNING by a killed process as FAILED; return the FINISHED runs' config hashes.

    Returns ``{(cell_key, head): config_hash}``. Call once per grid invocation, before any worker
    starts: a RUNNING run at that moment belongs to a process that no longer exists (two
    ``dor-bench run`` on one grid at once are not supported). ``mark_crashed=False`` only reads.
    """
    finished: dict[tuple[str, str], str] = {}
    for run in _all_runs(client, experiment_id):
        key = (run.data.tags.get("cell_key", ""), run.data.tags.get("head", ""))
        if run.info.status == "FINISHED":
            finished[key] = run.data.tags.get("config_hash", "")
        elif run.info.status == "RUNNING" and mark_crashed:
            log.warning("run %s (%s, %s) was left RUNNING by a killed process: marked FAILED, redoing it",
                        run.info.run_id, *key)
            client.set_terminated(run.info.run_id, status="FAILED")
    return finished


def finished_run_exists(client: MlflowClient, experiment_id: str, cell_key: str, head: str) -> bool:
    """Whether the store already holds a FINISHED run of this (cell, head)."""
    query = f"tags.cell_key = '{cell_key}' and tags.head = '{head}' and attributes.status = 'FINISHED'"
    return bool(client.search_runs([experiment_id], filter_string=query, max_results=1))


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
    """Writes one (cell, head) run: opened with its tags and params, closed with metrics and artifacts."""

    client: MlflowClient
    experiment_id: str
    tags: dict[str, str]
    params: dict[str, object]
    run_id: str = field(init=False, default="")
    failed: bool = field(init=False, default=False)

    def __enter__(self) -> "RunRecorder":
        run = self.client.create_run(self.experiment_id, tags=self.tags,
                                     run_name=f"{self.tags['head']}|{self.tags['cell_key']}")
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in sorted(self.params.items())]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        current = self.client.get_run(self.run_id).info.status
        if current != "RUNNING":
            log.warning("run %s was marked %s by another dor-bench process while it trained; left as is",
                        self.run_id, current)
            return
        status = "FINISHED" if exc_type is None and not self.failed else "FAILED"
        self.client.set_terminated(self.run_id, status=status)

    def fail(self, reason: str) -> None:
        """End the run as FAILED (tag ``failure``) without raising: the grid goes on with other runs."""
        log.warning("run %s (%s, %s) failed: %s", self.run_id, self.tags["cell_key"], self.tags["head"], reason)
        self.client.set_tag(self.run_id, "failure", reason)
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


def status_counts(client: MlflowClient, experiment_id: str) -> dict[str, int]:
    """Number of runs per status in an experiment (used by tests and summaries)."""
    counts: dict[str, int] = {}
    for run in _all_runs(client, experiment_id):
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts

