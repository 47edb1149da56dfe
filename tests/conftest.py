"""Shared fixtures: offline MLflow settings and a tiny real dataset built by the suite itself."""

import os

import pytest
import yaml

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
