"""Exactly once under concurrency: whole grids launched at the same time into one store end with one
FINISHED run per unit of work (result, tuning trial, probe) and nothing left RUNNING."""

import os
import subprocess
import sys
import time
from collections import Counter

from mlflow.entities import ViewType

from benchmark.store import open_client

N_SPLITS, HEADS, TRIALS = 2, ("mse", "dor"), ("lr=0.001", "lr=0.003")


def _grid(grid_file, **overrides):
    return grid_file(splits=N_SPLITS, heads={"mse": {}, "dor": {"num_bins": 8}}, epochs=2,
                     tuning={"lr": [1.0e-3, 3.0e-3]}, **overrides)


def _launch(path, uri, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "benchmark.cli", "run", "--config", path, "--tracking-uri", uri, "--workers", "1", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(processes, timeout_s=900):
    deadline = time.monotonic() + timeout_s
    for process in processes:
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert process.returncode == 0, output[-3000:]


def _assert_exactly_once(uri):
    client = open_client(uri)
    experiment_id = client.get_experiment_by_name("tiny").experiment_id
    runs = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=5000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = Counter((r.data.tags["role"], r.data.tags["cell_key"], r.data.tags["head"],
                        r.data.tags.get("trial") if r.data.tags["role"] == "trial" else "")
                       for r in runs if r.info.status == "FINISHED" and r.info.lifecycle_stage == "active")
    cells = {key[1] for key in finished}
    expected = {("reference", c, "probe", "") for c in cells}
    expected |= {("result", c, h, "") for c in cells for h in HEADS}
    expected |= {("trial", c, h, t) for c in cells for h in HEADS for t in TRIALS}
    assert len(cells) == N_SPLITS and set(finished) == expected and set(finished.values()) == {1}
    return runs


def test_two_launches_at_once_into_a_new_sqlite_store(grid_file, tracking_uri):
    path = _grid(grid_file)
    _wait([_launch(path, tracking_uri), _launch(path, tracking_uri)])
    _assert_exactly_once(tracking_uri)


def test_two_launches_at_once_into_an_existing_store(grid_file, tracking_uri):
    first = grid_file(splits=1, heads={"mse": {}}, epochs=2, tuning={"lr": [1.0e-3, 3.0e-3]})
    _wait([_launch(first, tracking_uri)])  # the store and the grid's experiment exist, part of the grid is done
    path = _grid(grid_file)  # the same grid, all of it
    _wait([_launch(path, tracking_uri), _launch(path, tracking_uri)])
    _assert_exactly_once(tracking_uri)


def test_four_workers_against_a_local_mlflow_server(grid_file, mlflow_server):
    uri = mlflow_server.url()
    path = _grid(grid_file)
    _wait([_launch(path, uri, "--workers", "4")])
    runs = _assert_exactly_once(uri)
    assert len({r.data.tags["claim.owner"].rsplit(":", 2)[1] for r in runs if r.info.status == "FINISHED"}) >= 2
