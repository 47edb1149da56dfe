"""Exactly-once claims of work items held in an MLflow experiment.

A work item (a (cell, head) result, a tuning trial, ...) is named by a *key*: a few tags such as
``{"role": "result", "cell_key": ..., "head": ...}``. The claim on an item **is** the MLflow run that will
hold its result, so claiming costs no extra run and a crashed claim is visible where the results are.
MLflow offers no compare-and-swap, so the protocol uses only create, read and terminate, and relies on
one property of the store: it is linearizable (every call takes effect at one instant between its start
and its return, and a later call sees it). One SQLite file and one tracking server over one SQL database
both are; a server that sends reads to a lagging replica is not (:class:`StoreConsistencyError`).

Protocol (:meth:`ClaimBook.try_claim`), one attempt:

1. *Peek*: list the item's active runs. A FINISHED run -> DONE. A RUNNING run whose heartbeat (or, for
   a run made before claims, its start) is older than ``ttl_s`` is expired: tag it (``failure``,
   ``claim.expired_by``), then mark it FAILED. Another live RUNNING run -> BUSY.
2. *Create* my run: RUNNING, with the key tags, ``claim.owner`` and a first ``claim.heartbeat``, in one
   call (MLflow writes a run and its tags in one transaction).
3. *List* the item's active runs again. A FINISHED run -> withdraw, DONE. Any RUNNING run besides mine
   (or mine no longer RUNNING) -> withdraw, back off (jittered, exponential) and start a new attempt.
   Otherwise I hold the claim.
   Withdrawing = mark my run KILLED, then delete it, so it never clutters the experiment.

Step 1 only saves writes (no run is created for an item that is done or held) and clears expired runs;
safety rests on steps 2 and 3.

Safety: two holders never overlap, and no claim is won once the item has a FINISHED run. Say A and B
both hold, with create C and list L (C_A < L_A, C_B < L_B). L_A did not show B running, so either
L_A < C_B, or B had already ended before L_A. In the first case C_A < L_A < C_B < L_B, so L_B shows A
running unless A had ended: the holds do not overlap. And an earlier holder that ended FINISHED before
my list shows up in that same list (a single SQL statement gives statuses), so I withdraw.

Expiry and fencing: a holder heartbeats (tag ``claim.heartbeat`` = its epoch seconds, every
``heartbeat_s``) from a background thread. A process that finds a RUNNING run whose heartbeat is older
than ``ttl_s`` by its own clock tags the run ``claim.expired_by`` *before* marking it FAILED, and then
claims the item through the same protocol. A holder that was only slow (paused, cut off) must not end
FINISHED next to its successor: :meth:`Claim.finish` reads its run before writing FINISHED (expired ->
end FAILED) and again after (the expiry tag arrived in between -> end FAILED). Every expirer writes its
tag before its FAILED, and the holder writes FAILED after any tag it reads, so an expired run always
ends FAILED. (For the one call between such a holder's FINISHED and its FAILED, a reader may take the
item for DONE; at worst the item is then left undone until the next launch, never done twice.) Timing
is used only to *suspect* a holder, never to decide safety. ``ttl_s`` must be much
larger than the clock skew between nodes (seconds) and than ``heartbeat_s``; otherwise live holders are
expired and their work is wasted, still without two FINISHED runs.

Liveness: two attempts that collide both withdraw; they retry after random pauses drawn from a window
that doubles per collision, so repeated collisions become improbable, but are not impossible: after
``attempts`` collisions :meth:`ClaimBook.try_claim` answers BUSY without a holder. A SIGKILLed holder
stops heartbeating; ``ttl_s`` later any process takes the item over. BUSY also means only "try later":
the holder may still fail, and FAILED items are claimed anew.

Why not a unique-constraint primitive: experiment names are unique, and param values are write-once,
so ``create_experiment`` or ``log_param`` on a shared ledger run would give a true test-and-set without
collisions. But a claim must also be released and taken over after a crash, which a write-once name
cannot do without generations and a fencing step like the one above, and the ledger run itself would
need a claim; names would also pile up as experiments. The run-per-claim protocol needs nothing beside
the result runs.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType

from mlflow.entities import Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark.store import DEFAULT_TTL_S, HEARTBEATS_PER_TTL, StoreError, all_runs
from benchmark.schema import (CLAIM_PREFIX, EXPIRED, EXPIRED_TAG, FAILED, FINISHED, HEARTBEAT_TAG, KILLED, OWNER_TAG,
                              RUNNING, TAGS)

log = logging.getLogger(__name__)


MAX_RUNS_PER_KEY = 1000


class ClaimError(RuntimeError):
    """A claim could not be made or ended as asked."""


class ClaimKeyError(ClaimError, ValueError):
    """A key or its tags cannot name a work item."""


class StoreConsistencyError(ClaimError):
    """The store did not show a run this process had just created: it is not linearizable."""


class ClaimLost(ClaimError):
    """Another process expired this claim (its heartbeat looked older than the ttl) and may redo the item."""


class State(StrEnum):
    """The two answers of :meth:`ClaimBook.try_claim` that are not a claim."""

    DONE = "done"
    BUSY = "busy"


@dataclass(frozen=True)
class Outcome:
    """Why :meth:`ClaimBook.try_claim` returned no claim.

    DONE: ``run_id`` is the item's FINISHED run. BUSY: ``run_id`` is the live run of ``owner`` that holds
    the item; both are ``None`` when repeated collisions, not a holder, stopped the attempts.
    """

    state: State
    run_id: str | None = None
    owner: str | None = None


def default_owner() -> str:
    """A name unique to this process and call: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def tag_clause(name: str, value: str) -> str:
    """An MLflow filter clause that matches tag ``name`` equal to ``value`` (or a superset of it).

    MLflow's parser strips the outer quotes and does not unescape, and a backslash before a quote ends a
    string early. So: single quotes when the value has no ``'``, double quotes when it has no ``"``, and
    for values with both quotes or a backslash a ``LIKE`` pattern with ``_`` (any one character) in
    their place. Callers must re-check values exactly (:func:`matches`); the LIKE form also treats ``%``
    and ``_`` in the value as wildcards.

    Raises
    ------
    ClaimKeyError
        When the tag name contains a backtick (MLflow tag names never do).
    """
    if "`" in name:
        raise ClaimKeyError(f"tag name {name!r} contains a backtick; MLflow tag names cannot")
    identifier = f"tags.`{name}`"
    if "\\" not in value:
        if "'" not in value:
            return f"{identifier} = '{value}'"
        if '"' not in value:
            return f'{identifier} = "{value}"'
    pattern = value.replace("\\", "_").replace("'", "_").replace('"', "_")
    return f"{identifier} LIKE '{pattern}'"


def key_filter(key: Mapping[str, str]) -> str:
    """The AND of :func:`tag_clause` over a key's tags (sorted by name)."""
    return " and ".join(tag_clause(name, key[name]) for name in sorted(key))


def matches(run: Run, key: Mapping[str, str]) -> bool:
    """Whether a run carries exactly the key's tag values."""
    return all(run.data.tags.get(name) == value for name, value in key.items())


def heartbeat_of(run: Run) -> float:
    """Epoch seconds of a run's last heartbeat (its start time when it never beat)."""
    try:
        return float(run.data.tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        return (run.info.start_time or 0) / 1000.0


def _validate_key(key: Mapping[str, str], tags: Mapping[str, str]) -> None:
    if not key:
        raise ClaimKeyError("a claim key needs at least one tag, e.g. {'cell_key': ..., 'head': ...}")
    for name, value in {**tags, **key}.items():
        if not isinstance(value, str):
            raise ClaimKeyError(f"tag {name!r} has a {type(value).__name__} value {value!r}; pass strings")
        if name.startswith(CLAIM_PREFIX) or name == TAGS.failure:
            raise ClaimKeyError(f"tag {name!r} is reserved for claims; rename it")
    clashes = sorted(name for name in key if name in tags and tags[name] != key[name])
    if clashes:
        raise ClaimKeyError(f"tags {clashes} are given twice with different values (key and tags); give each once")


class _Heartbeat:
    """Background thread that refreshes a claim's heartbeat tag and notices when the claim was taken."""

    def __init__(self, client: MlflowClient, run_id: str, period_s: float, clock: Callable[[], float]) -> None:
        self._client, self._run_id, self._period_s, self._clock = client, run_id, period_s, clock
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim-heartbeat-{run_id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                run = self._client.get_run(self._run_id)
                if _taken(run):
                    log.warning("claim %s was expired by %s; its result will be discarded", self._run_id,
                                run.data.tags.get(EXPIRED_TAG, "another process"))
                    self.lost.set()
                    return
                self._client.set_tag(self._run_id, HEARTBEAT_TAG, f"{self._clock():.3f}")
            except (MlflowException, StoreError, OSError) as err:
                log.warning("heartbeat of claim %s failed (%s); trying again in %.0f s", self._run_id, err,
                            self._period_s)

    def stop(self) -> None:
        """Stop beating; waits for a beat in progress (at most one period)."""
        self._stop.set()
        self._thread.join(timeout=self._period_s)


def _taken(run: Run) -> bool:
    """Whether a held claim's run was expired, ended or deleted by someone else."""
    return (EXPIRED_TAG in run.data.tags or run.info.status != RUNNING
            or run.info.lifecycle_stage != "active")


class Claim:
    """A held claim: the RUNNING run ``run_id`` that will hold the item's result.

    Use it as a context manager: leaving the block ends the run FINISHED, an exception ends it FAILED,
    a ``KeyboardInterrupt`` (or another ``BaseException``) KILLED; the heartbeat stops in every case.
    """

    def __init__(self, client: MlflowClient, run_id: str, key: Mapping[str, str], owner: str,
                 heartbeat: _Heartbeat) -> None:
        self.client = client
        self.run_id = run_id
        self.key = dict(key)
        self.owner = owner
        self._heartbeat = heartbeat
        self.status: str | None = None

    def __repr__(self) -> str:
        return f"Claim(run_id={self.run_id!r}, key={self.key!r}, status={self.status or RUNNING})"

    def release(self) -> None:
        """Give the claim up before any work was recorded: stop the heartbeat, end the run KILLED and delete it,
        so the item is free at once and leaves nothing behind."""
        if self.status is not None:
            raise ClaimError(f"claim {self.run_id} already ended {self.status}")
        self._heartbeat.stop()
        self.client.set_terminated(self.run_id, KILLED)
        self.client.delete_run(self.run_id)
        self.status = KILLED

    def abandon(self) -> None:
        """Stop beating for a claim another process has taken over (:attr:`lost`): its run is theirs now, so
        nothing is written to it — not even the status, which would overwrite the taker's record."""
        if not self.lost:
            raise ClaimError(f"claim {self.run_id} is still ours; finish or release it instead")
        self._heartbeat.stop()
        self.status = "ABANDONED"

    @property
    def lost(self) -> bool:
        """Whether the heartbeat found the claim expired by another process (the result will be discarded)."""
        return self._heartbeat.lost.is_set()

    def check(self) -> None:
        """Raise :class:`ClaimLost` when the claim was expired; call it between long steps to stop early."""
        if self.lost:
            raise ClaimLost(f"claim {self.run_id} on {self.key} was expired by another process (no heartbeat for "
                            "longer than the ttl: was this process paused?); the item will be redone there")

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.status is not None:
            return
        if exc_type is None:
            self.finish(FINISHED)
        else:
            self.finish(FAILED if issubclass(exc_type, Exception) else KILLED)

    def finish(self, status: str = FINISHED) -> str:
        """Stop the heartbeat and end the run; return the status it ended with.

        FINISHED is written only while the claim is still ours: a claim that was expired meanwhile ends
        FAILED instead (the ``failure`` tag says why), and the caller should treat its result as void.

        Raises
        ------
        ClaimError
            When the claim has already ended, or ``status`` is not FINISHED, FAILED or KILLED.
        """
        if self.status is not None:
            raise ClaimError(f"claim {self.run_id} already ended {self.status}")
        if status not in (FINISHED, FAILED, KILLED):
            raise ClaimError(f"cannot end a claim with status {status!r}; use FINISHED, FAILED or KILLED")
        self._heartbeat.stop()
        self.status = self._end(status)
        return self.status

    def _end(self, status: str) -> str:
        if status != FINISHED:
            self.client.set_terminated(self.run_id, status)
            return status
        run = self.client.get_run(self.run_id)
        if _taken(run):
            log.warning("claim %s on %s was taken (%s, expired by %s) before it finished; result discarded",
                        self.run_id, self.key, run.info.status, run.data.tags.get(EXPIRED_TAG, "-"))
            if run.info.lifecycle_stage == "active" and run.info.status != FAILED:
                self.client.set_terminated(self.run_id, FAILED)
            return FAILED
        self.client.set_terminated(self.run_id, FINISHED)
        if EXPIRED_TAG in self.client.get_run(self.run_id).data.tags:
            log.warning("claim %s on %s was expired while it finished; ending it FAILED", self.run_id, self.key)
            self.client.set_terminated(self.run_id, FAILED)
            return FAILED
        return FINISHED


class ClaimBook:
    """Claims work items in one experiment for one owner (a process, or a worker inside it).

    Parameters
    ----------
    client : any tracking client (a SQLite store opened with :func:`benchmark.store.open_client`, or a server).
    experiment_id : the experiment that holds the items' runs.
    owner : written to ``claim.owner``; default ``host:pid:random``.
    heartbeat_s : period of a held claim's heartbeat.
    ttl_s : a RUNNING claim whose heartbeat is older than this is expired. Must exceed ``3 * heartbeat_s``
        and, by far, the clock skew between nodes.
    attempts : collisions tolerated per :meth:`try_claim` before it answers BUSY without a holder.
    backoff_s : base pause after a collision (doubled per attempt, at most 2 s, full jitter).
    clock : epoch seconds (tests pass a fake one).
    """

    def __init__(self, client: MlflowClient, experiment_id: str, owner: str | None = None, heartbeat_s: float = 30.0,
                 ttl_s: float = 300.0, attempts: int = 8, backoff_s: float = 0.05,
                 clock: Callable[[], float] = time.time) -> None:
        if heartbeat_s <= 0 or ttl_s <= 3 * heartbeat_s:
            raise ValueError(f"need 0 < 3 * heartbeat_s < ttl_s (got heartbeat_s={heartbeat_s}, ttl_s={ttl_s}) so "
                             "that a late heartbeat does not expire a live claim")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.client = client
        self.experiment_id = experiment_id
        self.owner = owner or default_owner()
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.clock = clock

    @classmethod
    def for_ttl(cls, client: MlflowClient, experiment_id: str, ttl_s: float = DEFAULT_TTL_S, **options) -> ClaimBook:
        """A book whose claims expire after ``ttl_s`` and beat ``HEARTBEATS_PER_TTL`` times per ttl."""
        return cls(client, experiment_id, heartbeat_s=ttl_s / HEARTBEATS_PER_TTL, ttl_s=ttl_s, **options)

    def try_claim(self, key: Mapping[str, str], tags: Mapping[str, str] | None = None, run_name: str | None = None,
                  parent_run_id: str | None = None) -> Claim | Outcome:
        """Claim the item named by ``key``, or say why not.

        Parameters
        ----------
        key : the tags that name the item (values may hold any characters).
        tags : further tags of the run (written at creation; must not contradict ``key``).
        run_name : the run's name.
        parent_run_id : makes the run a child of this run (tag ``mlflow.parentRunId``).

        Returns
        -------
        A :class:`Claim` (the run is created and heartbeating; use it in a ``with`` block), or an
        :class:`Outcome`: DONE with the FINISHED run's id, or BUSY with the live holder.

        Raises
        ------
        ClaimKeyError
            When the key is empty, a value is not a string, or a tag name is reserved.
        StoreConsistencyError
            When the store does not show a run just created (e.g. reads from a lagging replica).
        """
        extra = dict(tags or {})
        _validate_key(key, extra)
        for attempt in range(self.attempts):
            peek = self._peek(key)
            if peek is not None:
                return peek
            run_id = self._create(key, extra, run_name, parent_run_id)
            try:
                verdict = self._verdict(key, run_id)
            except BaseException:
                self._withdraw(run_id)
                raise
            if verdict is None:
                log.debug("%s holds %s as run %s", self.owner, dict(key), run_id)
                return Claim(self.client, run_id, key, self.owner,
                             _Heartbeat(self.client, run_id, self.heartbeat_s, self.clock))
            self._withdraw(run_id)
            if verdict.state is State.DONE:
                return verdict
            if attempt + 1 < self.attempts:
                pause = random.uniform(0.0, min(2.0, self.backoff_s * 2 ** attempt))
                log.debug("%s collided on %s (attempt %d); retrying in %.3f s", self.owner, dict(key), attempt + 1,
                          pause)
                time.sleep(pause)
        log.info("%s gave up on %s after %d collisions; try again later", self.owner, dict(key), self.attempts)
        return Outcome(State.BUSY)

    def reap_expired(self, key: Mapping[str, str] | None = None) -> list[str]:
        """Mark FAILED every RUNNING claim (of ``key``, or of the whole experiment) whose heartbeat expired.

        Only runs made by claims (tag ``claim.owner``) are reaped here, so that other RUNNING runs of the
        experiment are left alone; :meth:`try_claim` also takes over a RUNNING run of its own key that has
        no heartbeat (made before claims) once ``ttl_s`` has passed since it started. Returns the ids of
        the runs marked. Each gets the tags ``failure`` (whose claim expired, its last heartbeat, who
        noticed) and ``claim.expired_by``.
        """
        query = f"attributes.status = '{RUNNING}'"
        if key:
            query += " and " + key_filter(key)
        reaped = []
        for run in all_runs(self.client, self.experiment_id, query):
            if OWNER_TAG in run.data.tags and (not key or matches(run, key)) and self._expired(run):
                self._expire(run)
                reaped.append(run.info.run_id)
        return reaped

    def _peek(self, key: Mapping[str, str]) -> Outcome | None:
        runs = self._runs_of(key)
        finished = [r for r in runs if r.info.status == FINISHED]
        if finished:
            return Outcome(State.DONE, finished[0].info.run_id, finished[0].data.tags.get(OWNER_TAG))
        for run in runs:
            if run.info.status != RUNNING:
                continue
            if self._expired(run):
                self._expire(run)
            else:
                return Outcome(State.BUSY, run.info.run_id, run.data.tags.get(OWNER_TAG))
        return None

    def _create(self, key: Mapping[str, str], tags: Mapping[str, str], run_name: str | None,
                parent_run_id: str | None) -> str:
        all_tags = {**tags, **key, OWNER_TAG: self.owner, HEARTBEAT_TAG: f"{self.clock():.3f}"}
        if parent_run_id:
            all_tags[TAGS.parent_run_id] = parent_run_id
        return self.client.create_run(self.experiment_id, tags=all_tags, run_name=run_name).info.run_id

    def _verdict(self, key: Mapping[str, str], run_id: str) -> Outcome | None:
        runs = self._runs_of(key)
        mine = [r for r in runs if r.info.run_id == run_id]
        if not mine:
            raise StoreConsistencyError(
                f"run {run_id} was created for {dict(key)} but the store does not list it; claims need a store "
                "that reads its own writes (one SQLite file, or a tracking server without read replicas)")
        finished = [r for r in runs if r.info.status == FINISHED]
        if finished:
            return Outcome(State.DONE, finished[0].info.run_id, finished[0].data.tags.get(OWNER_TAG))
        others = [r for r in runs if r.info.status == RUNNING and r.info.run_id != run_id]
        if others:
            return Outcome(State.BUSY, others[0].info.run_id, others[0].data.tags.get(OWNER_TAG))
        if _taken(mine[0]):  # expired already (a clock far behind the others'): start again
            return Outcome(State.BUSY, run_id, self.owner)
        return None

    def _withdraw(self, run_id: str) -> None:
        self.client.set_terminated(run_id, KILLED)
        self.client.delete_run(run_id)

    def _expired(self, run: Run) -> bool:
        return self.clock() - heartbeat_of(run) > self.ttl_s

    def _expire(self, run: Run) -> None:
        beat = heartbeat_of(run)
        holder = run.data.tags.get(OWNER_TAG)
        who = f"owner {holder}, last heartbeat" if holder else "no owner (a run made before claims), started"
        reason = (f"{EXPIRED} {who} {_iso(beat)}, {self.clock() - beat:.0f} s before {self.owner} looked "
                  f"(ttl {self.ttl_s:.0f} s); the item is redone in another run")
        try:
            self.client.log_batch(run.info.run_id, tags=[RunTag(TAGS.failure, reason), RunTag(EXPIRED_TAG, self.owner)])
        except MlflowException:
            if self.client.get_run(run.info.run_id).info.lifecycle_stage == "active":
                raise
            return
        self.client.set_terminated(run.info.run_id, FAILED)
        log.warning("run %s: %s", run.info.run_id, reason)

    def _runs_of(self, key: Mapping[str, str]) -> list[Run]:
        """The item's active runs, from one search call (a single page, so statuses come from one snapshot)."""
        page = self.client.search_runs([self.experiment_id], filter_string=key_filter(key),
                                       max_results=MAX_RUNS_PER_KEY)
        if page.token:
            raise ClaimError(f"more than {MAX_RUNS_PER_KEY} active runs carry the key {dict(key)}; delete its "
                             "FAILED runs (mlflow runs delete) before claiming it again")
        return [run for run in page if matches(run, key)]


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")
