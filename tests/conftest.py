"""Shared fixtures: offline MLflow settings, a tiny real dataset built by the suite itself, a local MLflow server."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _cells_in_this_process(request, monkeypatch):
    """``dor-bench run`` without ``--workers`` runs one process per core on a frozen grid; the tests run it in
    this process (their monkeypatches reach the cells; spawned workers would not see them). Tests of the
    workers executor pass ``--workers`` explicitly; tests marked ``real_workers`` see ``default_workers``."""
    import benchmark.run.grid

    if "real_workers" not in request.keywords:
        monkeypatch.setattr(benchmark.run.grid, "default_workers", lambda plan: 1)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A 60-image `bundled` variant (5 scenes × 1 crop × 4 distortions × 3 levels) as a custom CSV dataset."""
    from benchmark.data.bundled import BundledRecipe, load_bundled

    root = tmp_path_factory.mktemp("tiny")
    recipe = BundledRecipe(scenes=("astronaut", "chelsea", "coffee", "rocket", "china"), crop_size=96,
                           max_shorter=96, crops_per_scene=1,
                           distortions=("gaussian_blur", "gaussian_noise", "jpeg", "contrast"), levels=(1, 3, 5))
    labels = load_bundled(recipe, cache=root / "cache")
    csv = root / "tiny.csv"
    labels.rename(columns={"mos": "score"})[["image", "score", "ref", "distortion"]].to_csv(csv, index=False)
    return csv


@pytest.fixture
def grid_file(tmp_path, tiny_dataset, monkeypatch):
    """Write a tiny grid YAML (test_resnet, three heads, the tiny dataset) and return a factory for it."""
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "cache"))

    def make(**overrides) -> str:
        grid = {
            "name": "tiny", "regime": "frozen", "backbones": ["test_resnet"],
            "heads": {"mse": {}, "dor": {"num_bins": 8}, "dor-seed": {"num_bins": 8}},
            "datasets": ["tiny"], "splits": 2, "seeds": [0], "epochs": 3, "batch_size": 16, "image_size": 64,
            "custom_datasets": {"tiny": {"csv": str(tiny_dataset), "higher_is_better": True, "scale": [1, 5]}},
        }
        grid.update(overrides)
        path = tmp_path / "grid.yaml"
        path.write_text(yaml.safe_dump(grid))
        return str(path)

    return make


@pytest.fixture
def tracking_uri(tmp_path):
    """A fresh SQLite MLflow store."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


class MlflowServer:
    """A local ``mlflow server`` (SQLite backend) started in the background; :meth:`url` waits until it serves."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log_path = folder / "server.log"
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                   "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port",
                   str(self.port), "--workers", "2"]
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen(command, cwd=folder, stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True,
                                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
        self._ready = False

    def url(self, timeout_s: float = 180.0) -> str:
        """The server's URL once ``/health`` answers; skips the test (with the log) when it cannot start."""
        address = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout_s
        while not self._ready and time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.skip(f"mlflow server exited with {self.process.returncode} before serving: "
                            f"{self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{address}/health", timeout=2) as response:
                    self._ready = response.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        if not self._ready:
            pytest.skip(f"mlflow server did not answer {address}/health within {timeout_s:.0f} s: "
                        f"{self.log_path.read_text()[-2000:]}")
        return address

    def stop(self) -> None:
        """Stop the server's process group (the CLI and its uvicorn workers)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One local MLflow server for the session, started on first use and stopped at the end."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield server
    finally:
        server.stop()
