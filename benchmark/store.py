"""Opening an MLflow tracking store that several processes use at once.

Two hazards of a SQLite store, as found in MLflow 3.17's SQLAlchemy store:

**First use.** ``SqlAlchemyStore.__init__`` creates the tables and runs every alembic migration of a
new database without any inter-process lock (MLflow locks only its job and workspace stores, under a
temp-dir file named after a hash of the URI string). Four processes opening one new file at once: in
each of three trials three or four of them failed (``duplicate column name: step``, ``table
_alembic_tmp_metrics already exists``, ``Online migration expected to match one row``), which can leave
the file half-migrated.
:func:`open_client` holds ``filelock.FileLock`` on ``<database>.lock`` beside the file while MLflow opens
(and, the first time, migrates) it: the first process migrates, the others wait, then find the schema
current. The lock is named after the file, so relative and absolute URIs of one file share it.

**Concurrent writers.** MLflow opens every SQLite session with ``PRAGMA busy_timeout = 20000`` (rollback
journal, SQLAlchemy's default pool), so a writer waits up to 20 s for another's transaction instead of
failing at once; only engine creation and schema checks run with pysqlite's 5 s default. Measured on
two shared cores: 8 processes x 200 calls each (create_run, log_batch, set_tag, search_runs,
set_terminated) gave no error and a worst call of 3.7 s. ``database is locked`` therefore means a lock
held for more than 20 s (a long read of a large store, an external tool, a slow network file system).
:class:`RetryingClient` retries such a call with jittered exponential backoff up to a deadline, then
raises :class:`StoreBusyError`. A retry never doubles a write: every MLflow SQL-store call rolls back
on that error, and the calls that commit in several steps (``log_batch``) are idempotent. The journal
mode is left as MLflow sets it: write-ahead logging made the same load 2.2x faster (1.6x for one
process), but it is a lasting property of the file and unsafe on network file systems, where cluster
stores often live.

A tracking server (``http://``, ``https://``) needs neither: it migrates once at start-up, and MLflow's
REST client already retries HTTP 503, the server's answer to a locked database, with backoff.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import filelock
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per downloaded artifact

log = logging.getLogger(__name__)

DEFAULT_STORE_DIR = Path("mlruns")
LOCK_SUFFIX = ".lock"
DEFAULT_TTL_S = 300.0
"""A claim (a RUNNING run that holds a unit of work, :mod:`benchmark.run.claims`) whose heartbeat is older than
this is taken over: its process is presumed dead."""
HEARTBEATS_PER_TTL = 10
"""A held claim beats this many times per ttl, so a few late beats never expire a live claim."""
_LOCKED_MESSAGES = ("database is locked", "database table is locked")
_ALREADY_EXISTS = ErrorCode.Name(RESOURCE_ALREADY_EXISTS)

T = TypeVar("T")


class StoreError(RuntimeError):
    """The tracking store could not be opened or used."""


class StoreLockTimeout(StoreError):
    """Another process held the store's initialisation lock for longer than the timeout."""


class StoreBusyError(StoreError):
    """SQLite kept answering ``database is locked`` for longer than the retry deadline."""


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff for calls that hit ``database is locked``.

    Attempt ``i`` (from 0) is followed by a pause drawn uniformly from ``[0, min(max_s, base_s * 2**i)]``
    ("full jitter"), so processes that collided once do not collide again in lockstep. Each attempt can
    itself wait up to MLflow's 20 s busy timeout; ``deadline_s`` bounds the whole call.
    """

    base_s: float = 0.05
    max_s: float = 2.0
    deadline_s: float = 300.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        return random.uniform(0.0, min(self.max_s, self.base_s * 2 ** attempt))

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``function``, retrying while it fails with ``database is locked``.

        Raises
        ------
        StoreBusyError
            When the database stayed locked past ``deadline_s``.
        """
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return function(*args, **kwargs)
            except (MlflowException, sqlalchemy.exc.OperationalError, sqlite3.OperationalError) as err:
                if not is_database_locked(err):
                    raise
                elapsed = time.monotonic() - start
                pause = self.pause(attempt)
                if elapsed + pause > self.deadline_s:
                    raise StoreBusyError(
                        f"{getattr(function, '__name__', function)} still found the SQLite database locked after "
                        f"{elapsed:.0f} s and {attempt + 1} attempts; find the process holding it (a long "
                        "report, a database browser) or run parallel workers against an MLflow server "
                        "(mlflow server --backend-store-uri sqlite:///...)") from err
                log.warning("%s: database is locked (attempt %d, %.0f s so far); retrying in %.2f s",
                            getattr(function, "__name__", function), attempt + 1, elapsed, pause)
                time.sleep(pause)
                attempt += 1


DATASET_RACE_ATTEMPTS = 3


def is_dataset_race(error: BaseException) -> bool:
    """Whether ``error`` is MLflow's get-or-create race on a dataset entity.

    ``log_inputs`` looks a dataset up by (experiment, name, digest) and inserts it when missing; two
    processes logging the same split's dataset at once can both miss it, and the second insert then
    breaks the table's unique constraint. Nothing was written by the failed call, and a retry finds the
    other process's dataset and links it (seen with two launches of one grid on one SQLite store).
    """
    return "UNIQUE constraint failed: datasets" in str(error) or "duplicate key value violates unique constraint" \
        in str(error) and "datasets" in str(error)


def is_database_locked(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is SQLite's ``database is locked``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if any(message in str(current) for message in _LOCKED_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


class RetryingClient(MlflowClient):
    """An :class:`~mlflow.tracking.MlflowClient` whose public calls are retried while SQLite is locked.

    Every public method behaves as in ``MlflowClient``; a call that fails with ``database is locked`` is
    repeated under ``retry`` (:class:`RetryPolicy`). Other errors pass through unchanged.
    """

    def __init__(self, tracking_uri: str, retry: RetryPolicy | None = None) -> None:
        super().__init__(tracking_uri)
        self._retry = retry or RetryPolicy()

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("_") or not inspect.ismethod(attribute):
            return attribute
        retry = super().__getattribute__("_retry")
        return functools.update_wrapper(functools.partial(retry.call, attribute), attribute)


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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for other URIs and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def open_client(uri: str, lock_timeout_s: float = 600.0, retry: RetryPolicy | None = None) -> MlflowClient:
    """Open a tracking store safely from any number of processes at once.

    For a ``sqlite:///`` URI the parent folder is created, MLflow opens (and on first use creates and
    migrates) the database while this process holds ``<database>.lock``, and the client retries calls
    that meet ``database is locked`` (:class:`RetryingClient`). Any other URI gives a plain
    ``MlflowClient``.

    Parameters
    ----------
    uri : tracking URI, e.g. ``sqlite:///mlruns/mlflow.db`` or ``http://host:5000``.
    lock_timeout_s : how long to wait for another process that is creating or migrating the database.
    retry : backoff of SQLite calls (default :class:`RetryPolicy`).

    Raises
    ------
    StoreLockTimeout
        When another process held the initialisation lock for longer than ``lock_timeout_s``.
    """
    path = sqlite_path(uri)
    if path is None:
        return MlflowClient(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    try:
        with filelock.FileLock(lock_path, timeout=lock_timeout_s):
            return RetryingClient(uri, retry)
    except filelock.Timeout as err:
        raise StoreLockTimeout(
            f"waited {lock_timeout_s:.0f} s for {lock_path}, held by another process that is creating or "
            f"migrating {path}; if no such process is alive, delete the lock file and retry") from err


def all_runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list:
    """Every active run of the experiment that matches ``filter_string`` (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=5000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Id of the experiment ``name``, created when missing; safe when several processes race to create it.

    Experiment names are unique in every MLflow store, so exactly one ``create_experiment`` succeeds and
    the others read the winner's id.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as err:
        if err.error_code != _ALREADY_EXISTS:
            raise
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise StoreError(f"experiment {name!r} exists (create_experiment said so) but cannot be read; it may be "
                         "deleted: restore it with `mlflow experiments restore` or pick another grid name")
    return experiment.experiment_id
