"""Child-process side of tests/test_claims.py: racing claimers (a pool task) and a holder to SIGKILL (a script).

Run as a script, it claims one item and holds it until killed::

    python tests/claim_worker.py URI EXPERIMENT ITEM HEARTBEAT_S TTL_S

printing one JSON line ``{"run_id": ..., "owner": ...}`` once the claim is held.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmark.run.claims import Claim, ClaimBook, State  # noqa: E402  (after the telemetry switch)
from benchmark.store import ensure_experiment, open_client  # noqa: E402


def item_key(item: int) -> dict[str, str]:
    """The key of test item ``item``: awkward values, as the harness's cell keys can be."""
    return {"role": "result", "cell_key": f"lite0|kadid->live 'split {item}'", "head": 'dor "k8"'}


def warm_up(_: int) -> None:
    """Nothing: a pool task that returns once the worker has imported this module (and MLflow)."""


def race(uri: str, experiment: str, n_items: int, start_at: float, work_s: float, deadline_s: float = 120.0) -> dict:
    """Open the store at ``start_at`` (all racers at once), then claim and 'work' until every item is done.

    Every racer walks the items in the same order, so they collide; BUSY items are offered again until
    they are DONE, as a harness re-offers them. Returns this racer's owner and the items it finished.
    """
    time.sleep(max(0.0, start_at - time.time()))
    client = open_client(uri)
    book = ClaimBook(client, ensure_experiment(client, experiment))
    pending, won = list(range(n_items)), []
    deadline = time.monotonic() + deadline_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{book.owner}: items {pending} still not done after {deadline_s} s")
        for item in list(pending):
            got = book.try_claim(item_key(item), tags={"item": str(item)})
            if isinstance(got, Claim):
                with got:
                    time.sleep(work_s)
                if got.status == "FINISHED":
                    won.append(item)
                    pending.remove(item)
            elif got.state is State.DONE:
                pending.remove(item)
        if pending:  # the others hold the rest: look again a little later
            time.sleep(random.uniform(0.1, 0.3))
    return {"owner": book.owner, "won": won}


def hold(uri: str, experiment: str, item: int, heartbeat_s: float, ttl_s: float) -> None:
    """Claim ``item``, report it on stdout, and keep it (heartbeating) until the process is killed."""
    client = open_client(uri)
    book = ClaimBook(client, ensure_experiment(client, experiment), heartbeat_s=heartbeat_s, ttl_s=ttl_s)
    claim = book.try_claim(item_key(item))
    if not isinstance(claim, Claim):
        raise SystemExit(f"could not claim item {item}: {claim}")
    print(json.dumps({"run_id": claim.run_id, "owner": book.owner}), flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    hold(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
