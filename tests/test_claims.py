"""Exactly-once claims and safe store opening: racing processes on SQLite (new and existing) and on a server,
expiry and take-over, fencing of a holder that outlived its ttl, SIGKILL, and filter-string quoting."""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.pool
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import filelock
import pytest
import sqlalchemy
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.utils.search_utils import SearchUtils

import claim_worker
from benchmark.run.claims import Claim, ClaimBook, ClaimKeyError, ClaimLost, Outcome, State, tag_clause
from benchmark.schema import EXPIRED_TAG, HEARTBEAT_TAG, OWNER_TAG, TAGS
from benchmark.store import (RetryPolicy, StoreBusyError, StoreLockTimeout, ensure_experiment, is_database_locked,
                             open_client)

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

REPO = Path(__file__).resolve().parents[1]
RACERS = 4
ITEMS = 6
SERVER_ITEMS = 4
AWKWARD = ["b|d->t s", "it's", 'say "hi"', "both ' and \"", "back\\slash", "trail\\", "50%", "50x", "a_b", "axb",
           "é→ü", "x' or tags.`head` = 'y", ""]


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """A migrated, empty SQLite store, created once and copied by the tests that need an existing store."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    open_client(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def store(template_db, tmp_path_factory):
    """One existing SQLite store shared by the in-process tests (each uses its own experiment)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    shutil.copy(template_db, path)
    uri = f"sqlite:///{path}"
    return uri, open_client(uri)


@pytest.fixture
def experiment(store, request) -> str:
    return ensure_experiment(store[1], request.node.name)


@pytest.fixture(scope="module", autouse=True)
def _racers(mlflow_server):
    """Spawned workers with MLflow imported, warming up (and the server starting) while other tests run."""
    with multiprocessing.get_context("spawn").Pool(RACERS) as pool:
        yield pool, pool.map_async(claim_worker.warm_up, range(RACERS))


@pytest.fixture
def racers(_racers):
    """The warmed-up worker pool shared by the race tests."""
    pool, warm = _racers
    warm.get(timeout=300)
    return pool


@pytest.fixture
def server(mlflow_server) -> str:
    """The session's local ``mlflow server`` (two workers, SQLite backend); skipped only if it cannot start."""
    return mlflow_server.url()


# ------------------------------------------------------------------------------------------------ helpers

def _all_runs(client, experiment_id: str) -> list:
    return client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000)


def _assert_exactly_once(uri: str, experiment: str, results: list[dict], n_items: int) -> None:
    """Each item: one FINISHED run, won by the racer that owns it; losers' runs KILLED and deleted."""
    client = open_client(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = _all_runs(client, experiment_id)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["item"]) for r in finished) == list(range(n_items))
    assert all(r.info.lifecycle_stage == "active" for r in finished)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    losers = [r for r in runs if r.info.status != "FINISHED"]
    assert all(r.info.status == "KILLED" and r.info.lifecycle_stage == "deleted" for r in losers)
    assert len(client.search_runs([experiment_id], max_results=1000)) == n_items  # nothing else is visible
    won = {item: result["owner"] for result in results for item in result["won"]}
    assert sorted(Counter(item for result in results for item in result["won"]).values()) == [1] * n_items
    assert {int(r.data.tags["item"]): r.data.tags[OWNER_TAG] for r in finished} == won
    for run in finished:
        assert run.data.tags["cell_key"] == claim_worker.item_key(int(run.data.tags["item"]))["cell_key"]


def _race(pool, uri: str, experiment: str, n_items: int) -> list[dict]:
    start_at = time.time() + 0.5
    return pool.starmap(claim_worker.race, [(uri, experiment, n_items, start_at, 0.05)] * RACERS)


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


class _Hooked:
    """A client whose ``method`` runs ``before`` / ``after`` once, around its first real call (to interleave
    two claimers deterministically)."""

    def __init__(self, client, method: str, before=None, after=None) -> None:
        self._client, self._method, self._before, self._after = client, method, before, after

    def __getattr__(self, name: str):
        attribute = getattr(self._client, name)
        if name != self._method:
            return attribute

        def hooked(*args, **kwargs):
            before, after, self._before, self._after = self._before, self._after, None, None
            if before:
                before()
            result = attribute(*args, **kwargs)
            if after:
                after()
            return result
        return hooked


def _heartbeat_threads(run_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"claim-heartbeat-{run_id[:8]}"]


# ------------------------------------------------------------------------------------------------ quoting

@pytest.mark.parametrize("value", AWKWARD)
def test_tag_clause_parses_back_to_the_value_or_a_like_pattern(value):
    (parsed,) = SearchUtils.parse_search_filter(tag_clause("cell key", value))
    assert parsed["type"] == "tag" and parsed["key"] == "cell key"
    if parsed["comparator"] == "=":
        assert parsed["value"] == value
    else:
        assert parsed["comparator"] == "LIKE" and ("\\" in value or ("'" in value and '"' in value))
        assert parsed["value"] == value.replace("\\", "_").replace("'", "_").replace('"', "_")


def test_awkward_keys_are_claimed_once_each_and_found_exactly(store, experiment):
    _, client = store
    book = ClaimBook(client, experiment)
    run_ids = {}
    for value in AWKWARD:
        claim = book.try_claim({"cell_key": value, "head": "dor"})
        assert isinstance(claim, Claim), value
        assert claim.finish() == "FINISHED"
        run_ids[value] = claim.run_id
    assert len(set(run_ids.values())) == len(AWKWARD)
    for value in AWKWARD:  # "a_b" is not "axb", "50%" is not "50x": wildcards never leak
        again = book.try_claim({"cell_key": value, "head": "dor"})
        assert again == Outcome(State.DONE, run_ids[value], book.owner)
    runs = client.search_runs([experiment], max_results=1000)
    assert sorted(r.data.tags["cell_key"] for r in runs) == sorted(AWKWARD)


def test_bad_keys_are_refused_with_the_reason(store, experiment):
    book = ClaimBook(store[1], experiment)
    with pytest.raises(ClaimKeyError, match="at least one tag"):
        book.try_claim({})
    with pytest.raises(ClaimKeyError, match="reserved"):
        book.try_claim({"claim.owner": "me"})
    with pytest.raises(ClaimKeyError, match="int value 3"):
        book.try_claim({"split": 3})
    with pytest.raises(ClaimKeyError, match=r"\['head'\]"):
        book.try_claim({"head": "dor"}, tags={"head": "mse"})
    with pytest.raises(ValueError, match="3 \\* heartbeat_s < ttl_s"):
        ClaimBook(store[1], experiment, heartbeat_s=30, ttl_s=60)


# ----------------------------------------------------------------------------------- protocol, in-process

def test_claim_run_carries_key_tags_owner_parent_and_ends_finished(store, experiment):
    _, client = store
    parent = client.create_run(experiment).info.run_id
    book = ClaimBook(client, experiment, owner="node-1:42:abc")
    with book.try_claim({"cell_key": "c", "head": "dor", "trial": "0"}, tags={"grid": "g"}, run_name="dor|c",
                        parent_run_id=parent) as claim:
        run = client.get_run(claim.run_id)
        assert run.info.status == "RUNNING" and run.info.run_name == "dor|c"
        assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["grid"] == "g"
        assert run.data.tags[OWNER_TAG] == "node-1:42:abc"
        assert abs(float(run.data.tags[HEARTBEAT_TAG]) - time.time()) < 60
        assert book.try_claim({"cell_key": "c", "head": "dor", "trial": "0"}) == Outcome(State.BUSY, claim.run_id,
                                                                                          "node-1:42:abc")
        assert book.try_claim({"cell_key": "c", "head": "dor", "trial": "1"}).finish() == "FINISHED"  # other key
    assert claim.status == "FINISHED" and client.get_run(claim.run_id).info.status == "FINISHED"
    assert not _heartbeat_threads(claim.run_id)


def test_exception_ends_failed_and_keyboard_interrupt_killed_then_item_is_claimable(store, experiment):
    _, client = store
    book = ClaimBook(client, experiment)
    key = {"cell_key": "c", "head": "mse"}
    with pytest.raises(ZeroDivisionError):
        with book.try_claim(key) as failed:
            1 / 0
    with pytest.raises(KeyboardInterrupt):
        with book.try_claim(key) as killed:
            raise KeyboardInterrupt
    assert (failed.status, killed.status) == ("FAILED", "KILLED")
    assert [client.get_run(c.run_id).info.status for c in (failed, killed)] == ["FAILED", "KILLED"]
    assert not _heartbeat_threads(failed.run_id) and not _heartbeat_threads(killed.run_id)
    assert book.try_claim(key).finish() == "FINISHED"
    statuses = Counter(r.info.status for r in _all_runs(client, experiment))
    assert statuses == {"FAILED": 1, "KILLED": 1, "FINISHED": 1}


def test_colliding_claims_both_withdraw_then_exactly_one_wins(store, experiment):
    _, client = store
    both_peeked, both_created = threading.Barrier(2), threading.Barrier(2)  # a certain collision: each creates
    # only after both peeked (nothing there yet), and lists only after both created
    books = [ClaimBook(_Hooked(_Hooked(client, "search_runs", after=lambda: both_peeked.wait(timeout=30)),
                               "create_run", after=lambda: both_created.wait(timeout=30)), experiment,
                       owner=f"racer-{i}") for i in range(2)]
    key = {"cell_key": "c", "head": "coral"}
    results: list[Claim | Outcome | None] = [None, None]

    def claim(i: int) -> None:
        results[i] = books[i].try_claim(key)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    claims = [r for r in results if isinstance(r, Claim)]
    others = [r for r in results if isinstance(r, Outcome)]
    assert len(claims) == 1 and len(others) == 1
    # The loser names the winner's run, or an attempt of the winner it saw before that attempt backed off too
    assert others[0].state is State.BUSY and others[0].owner in (claims[0].owner, None)
    withdrawn = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert {r.info.status for r in withdrawn} == {"KILLED"}
    assert {r.data.tags[OWNER_TAG] for r in withdrawn} == {"racer-0", "racer-1"}  # both backed off first
    assert claims[0].finish() == "FINISHED"
    assert [r.info.run_id for r in client.search_runs([experiment])] == [claims[0].run_id]


def test_item_finished_between_peek_and_create_is_done_and_claimer_withdraws(store, experiment):
    _, client = store
    key = {"cell_key": "c", "head": "emd"}
    first = ClaimBook(client, experiment, owner="first")
    late = ClaimBook(_Hooked(client, "create_run", before=lambda: first.try_claim(key).finish()), experiment,
                     owner="late")
    outcome = late.try_claim(key)
    (finished,) = client.search_runs([experiment])
    assert outcome == Outcome(State.DONE, finished.info.run_id, "first")
    (withdrawn,) = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert withdrawn.data.tags[OWNER_TAG] == "late" and withdrawn.info.status == "KILLED"


def test_live_claim_is_not_taken_over(store, experiment):
    _, client = store
    key = {"cell_key": "c", "head": "corn"}
    holder = ClaimBook(client, experiment, owner="holder", heartbeat_s=0.2, ttl_s=1.5).try_claim(key)
    other = ClaimBook(client, experiment, owner="other", heartbeat_s=0.2, ttl_s=1.5)
    first_beat = float(client.get_run(holder.run_id).data.tags[HEARTBEAT_TAG])
    deadline = time.monotonic() + 2.0  # longer than the ttl
    while time.monotonic() < deadline:
        assert other.try_claim(key) == Outcome(State.BUSY, holder.run_id, "holder")
        assert other.reap_expired() == []
        time.sleep(0.1)
    assert float(client.get_run(holder.run_id).data.tags[HEARTBEAT_TAG]) > first_beat + 1.0
    assert not holder.lost and holder.finish() == "FINISHED"


def test_expired_claim_of_a_dead_owner_is_taken_over(store, experiment):
    _, client = store
    key = {"cell_key": "c", "head": "sord"}
    last_beat = f"{time.time() - 5:.3f}"
    dead = client.create_run(experiment, tags={**key, OWNER_TAG: "dead-node:7:0", HEARTBEAT_TAG: last_beat})
    book = ClaimBook(client, experiment, owner="rescuer", heartbeat_s=0.2, ttl_s=1.0)
    with book.try_claim(key) as claim:
        pass
    runs = {r.info.run_id: r for r in client.search_runs([experiment])}
    assert {r.info.status for r in runs.values()} == {"FINISHED", "FAILED"} and len(runs) == 2
    expired = runs[dead.info.run_id]
    assert expired.info.status == "FAILED" and expired.data.tags[EXPIRED_TAG] == "rescuer"
    assert "claim expired: owner dead-node:7:0" in expired.data.tags[TAGS.failure]
    assert runs[claim.run_id].info.status == "FINISHED" and runs[claim.run_id].data.tags[OWNER_TAG] == "rescuer"


def test_reap_expired_marks_only_stale_claims_and_a_claim_takes_over_a_legacy_run(store, experiment):
    _, client = store
    stale = client.create_run(experiment, tags={"cell_key": "a", OWNER_TAG: "gone", HEARTBEAT_TAG: "1000.0"})
    started = int((time.time() - 10) * 1000)
    legacy = client.create_run(experiment, tags={"cell_key": "b"}, start_time=started)  # made before claims
    book = ClaimBook(client, experiment, heartbeat_s=0.2, ttl_s=1.0)
    live = book.try_claim({"cell_key": "c"})
    assert book.reap_expired({"cell_key": "b"}) == [] and book.reap_expired() == [stale.info.run_id]
    assert client.get_run(stale.info.run_id).info.status == "FAILED"
    assert client.get_run(legacy.info.run_id).info.status == "RUNNING"  # not a claim: reap_expired leaves it
    taken = book.try_claim({"cell_key": "b"})  # its own item's claim takes it over: no heartbeat, 10 s old
    assert isinstance(taken, Claim) and taken.finish() == "FINISHED"
    reason = client.get_run(legacy.info.run_id).data.tags[TAGS.failure]
    assert reason.startswith("claim expired: no owner (a run made before claims), started")
    assert live.finish() == "FINISHED"


def test_holder_expired_while_paused_cannot_finish(store, experiment):
    _, client = store
    key = {"cell_key": "c", "head": "l1"}
    paused = ClaimBook(client, experiment, owner="paused", heartbeat_s=100, ttl_s=1000).try_claim(key)
    future = ClaimBook(client, experiment, owner="rescuer", heartbeat_s=100, ttl_s=1000,
                       clock=lambda: time.time() + 2000)
    rescue = future.try_claim(key)  # sees the paused holder's heartbeat 2000 s old: expires it, then claims
    assert isinstance(rescue, Claim) and rescue.finish() == "FINISHED"
    assert paused.finish() == "FAILED"  # its run was expired: no second FINISHED
    statuses = {r.data.tags[OWNER_TAG]: r.info.status for r in client.search_runs([experiment])}
    assert statuses == {"paused": "FAILED", "rescuer": "FINISHED"}


def test_heartbeat_notices_an_expiry_and_check_raises(store, experiment):
    _, client = store
    key = {"cell_key": "c", "head": "mse-k8"}
    holder = ClaimBook(client, experiment, owner="holder", heartbeat_s=0.1, ttl_s=1.0).try_claim(key)
    rescuer = ClaimBook(client, experiment, owner="rescuer", heartbeat_s=0.1, ttl_s=1.0,
                        clock=lambda: time.time() + 100)
    assert rescuer.reap_expired(key) == [holder.run_id]
    deadline = time.monotonic() + 10
    while not holder.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(ClaimLost, match="expired by another process"):
        holder.check()
    assert holder.finish() == "FAILED" and client.get_run(holder.run_id).info.status == "FAILED"


def test_expiry_landing_while_the_holder_finishes_ends_it_failed(store, experiment):
    _, client = store
    key = {"cell_key": "c", "head": "coral"}
    rescuer = ClaimBook(client, experiment, owner="rescuer", heartbeat_s=100, ttl_s=1000,
                        clock=lambda: time.time() + 2000)
    holder_book = ClaimBook(_Hooked(client, "set_terminated", before=lambda: rescuer.reap_expired(key)), experiment,
                            owner="holder", heartbeat_s=100, ttl_s=1000)
    holder = holder_book.try_claim(key)
    assert holder.finish() == "FAILED"  # the expiry tag landed between its check and its FINISHED write
    run = client.get_run(holder.run_id)
    assert run.info.status == "FAILED" and run.data.tags[EXPIRED_TAG] == "rescuer"
    assert not client.search_runs([experiment], filter_string="attributes.status = 'FINISHED'")


# ------------------------------------------------------------------------------------------------- store

def test_locked_database_is_retried_with_backoff_then_succeeds(tmp_path):
    locked = _real_locked_error(tmp_path)
    assert is_database_locked(locked) and not is_database_locked(MlflowException("no such run"))
    calls = []

    def flaky(x):
        calls.append(x)
        if len(calls) < 3:
            raise locked
        return x * 2

    assert RetryPolicy(base_s=0.001, max_s=0.01).call(flaky, 21) == 42 and len(calls) == 3
    with pytest.raises(StoreBusyError, match="MLflow server"):
        RetryPolicy(base_s=0.001, max_s=0.01, deadline_s=0.05).call(lambda: (_ for _ in ()).throw(locked))
    with pytest.raises(MlflowException, match="no such run"):
        RetryPolicy().call(lambda: (_ for _ in ()).throw(MlflowException("no such run")))


def test_open_client_waits_for_the_initialisation_lock_then_names_it(tmp_path):
    path = tmp_path / "mlflow.db"
    with filelock.FileLock(f"{path}.lock"):  # another process creating the store
        with pytest.raises(StoreLockTimeout, match=r"mlflow\.db\.lock"):
            open_client(f"sqlite:///{path}", lock_timeout_s=0.2)
    assert not path.exists()


def _real_locked_error(tmp_path: Path) -> MlflowException:
    """``database is locked`` from SQLite through SQLAlchemy, wrapped as MLflow's SQL store wraps it."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = sqlalchemy.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("INSERT INTO t VALUES (1)"))
    except sqlalchemy.exc.OperationalError as err:
        return MlflowException(message=err, error_code=TEMPORARILY_UNAVAILABLE)
    finally:
        holder.close()
        engine.dispose()
    raise AssertionError("SQLite did not report the lock")


# ------------------------------------------------------------------------------------------ process races

def test_racing_processes_on_a_new_sqlite_store(racers, tmp_path):
    path = tmp_path / "new" / "mlflow.db"
    uri = f"sqlite:///{path}"
    results = _race(racers, uri, "race", ITEMS)
    _assert_exactly_once(uri, "race", results, ITEMS)
    assert _integrity(path) == "ok"


def test_racing_processes_on_an_existing_sqlite_store(racers, template_db, tmp_path):
    path = tmp_path / "mlflow.db"
    shutil.copy(template_db, path)
    uri = f"sqlite:///{path}"
    results = _race(racers, uri, "race", ITEMS)
    _assert_exactly_once(uri, "race", results, ITEMS)
    assert _integrity(path) == "ok"


def test_sigkilled_holder_is_taken_over_after_the_ttl(store, experiment):
    uri, client = store
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    experiment_name = client.get_experiment(experiment).name
    holder = subprocess.Popen([sys.executable, str(REPO / "tests" / "claim_worker.py"), uri, experiment_name, "0",
                               "0.5", "3"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        line = holder.stdout.readline() if ready else ""
        assert line, f"the holder process did not report a claim within 60 s (exit code {holder.poll()})"
        held = json.loads(line)
        book = ClaimBook(client, experiment, owner="survivor", heartbeat_s=0.5, ttl_s=3.0)
        key = claim_worker.item_key(0)
        assert book.try_claim(key) == Outcome(State.BUSY, held["run_id"], held["owner"])
    finally:
        holder.kill()
        holder.wait(timeout=30)
    killed_at = time.monotonic()
    claim = book.try_claim(key)
    while not isinstance(claim, Claim):
        assert claim.state is State.BUSY and time.monotonic() - killed_at < 30
        time.sleep(0.2)
        claim = book.try_claim(key)
    assert time.monotonic() - killed_at > 1.0  # the dead holder's last heartbeat had to age past the ttl first
    assert claim.finish() == "FINISHED"
    runs = {r.info.run_id: r for r in client.search_runs([experiment])}
    assert set(runs) == {held["run_id"], claim.run_id}
    dead = runs[held["run_id"]]
    assert dead.info.status == "FAILED" and held["owner"] in dead.data.tags[TAGS.failure]
    assert dead.data.tags[EXPIRED_TAG] == "survivor"


def test_racing_processes_on_a_local_server(racers, server):
    results = _race(racers, server, "race", SERVER_ITEMS)  # each REST call costs ~50-100 ms on 2 shared cores
    _assert_exactly_once(server, "race", results, SERVER_ITEMS)
