"""Time what an exactly-once claim adds per work item, on a SQLite store and on a local MLflow server.

Per item the harness already creates a run, reads its status and ends it (``RunRecorder``): that is the
*baseline*. With claims it calls ``ClaimBook.try_claim`` (peek, create, list) and ``Claim.finish`` (read,
end, read) instead, and a heartbeat thread runs meanwhile. Both are timed alternately, item by item, in
one process, so the ratio holds on a shared machine; the extra time is then set against grid runs of
0.5 s and 2 s. The server (``mlflow server --workers 2`` over SQLite in a temporary folder) is started
and stopped by the script.

Usage::

    python scripts/bench_claims.py [--items N] [--no-server]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.tracking import MlflowClient  # noqa: E402  (after the telemetry switch)

from benchmark.run.claims import ClaimBook  # noqa: E402
from benchmark.schema import FINISHED, ROLE_RESULT, TAGS  # noqa: E402
from benchmark.store import ensure_experiment, open_client  # noqa: E402

CELL_TAGS = {TAGS.grid: "bench", TAGS.backbone: "efficientnet_lite0", TAGS.dataset: "kadid10k", TAGS.regime: "frozen"}


def _baseline(client: MlflowClient, experiment_id: str, item: int) -> None:
    run = client.create_run(experiment_id, tags={**CELL_TAGS, TAGS.cell_key: f"base|{item}", TAGS.head: "dor"})
    client.get_run(run.info.run_id)
    client.set_terminated(run.info.run_id, FINISHED)


def _claimed(book: ClaimBook, item: int) -> None:
    claim = book.try_claim({TAGS.role: ROLE_RESULT, TAGS.cell_key: f"claim|{item}", TAGS.head: "dor"}, tags=CELL_TAGS)
    claim.finish()


def _time(function: Callable[[], None]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(client: MlflowClient, label: str, items: int) -> None:
    """Print baseline and claim milliseconds per item, the difference, and its share of 0.5 s / 2 s runs."""
    experiment_id = ensure_experiment(client, f"bench-claims-{time.time_ns()}")
    book = ClaimBook(client, experiment_id)
    _baseline(client, experiment_id, -1)  # warm caches and connections
    _claimed(book, -1)
    base, claim = [], []
    for item in range(items):
        base.append(_time(lambda: _baseline(client, experiment_id, item)))
        claim.append(_time(lambda: _claimed(book, item)))
    base_ms, claim_ms = 1000 * statistics.median(base), 1000 * statistics.median(claim)
    extra_ms = claim_ms - base_ms
    print(f"{label}: baseline {base_ms:.1f} ms/item, claim+finish {claim_ms:.1f} ms/item (medians of {items}); "
          f"claims add {extra_ms:.1f} ms = {extra_ms / 5:.1f} % of a 0.5 s run, {extra_ms / 20:.1f} % of a 2 s run "
          f"(~{base_ms / 3:.0f} ms per store call; load average {os.getloadavg()[0]:.1f})")


def _start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2"]
    proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.25)
    _stop_server(proc)
    raise RuntimeError(f"mlflow server did not start on {url}")


def _stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="items timed per variant and store (default 40)")
    parser.add_argument("--no-server", action="store_true", help="time the SQLite store only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        measure(open_client(f"sqlite:///{folder / 'sqlite' / 'mlflow.db'}"), "sqlite", args.items)
        if not args.no_server:
            proc, url = _start_server(folder)
            try:
                measure(open_client(url), "server", args.items)
            finally:
                _stop_server(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
