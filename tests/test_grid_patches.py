"""End-to-end: grids on a generated high-resolution dataset under a patch policy, frozen and fine-tuned.

The dataset: 6 content groups (seeded textures) x 6 images of 400 x 300, each with Gaussian noise of
a graded strength inside one 120 x 90 window (a local, fine-scale quality signal); score = 5 - 4 * level.
The grid stores the images at 200 x 150 and cuts 64 px patches: 2 random training patches per image and
epoch, 4 test patches (a 2 x 2 grid over the whole image) whose features / predictions are averaged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

import benchmark.run.regimes as regimes
from benchmark.factory import seeded_backbone
from benchmark.run.cell_data import load_cell_data
from benchmark.cli import main
from benchmark.config import load_grid
from benchmark.data import cache_root, load_custom_labels
from benchmark.factory import Preprocessing
from benchmark.run.seeding import CellSeeds
from benchmark.models import backbone_data_config
from benchmark.schema import PREDICTIONS_ARTIFACT

SIZE, STORED, PATCH = (400, 300), (200, 150), 64
POLICY = {"resize": list(STORED), "train_patches": 2, "test_patches": 4}
DESCRIBED = "resize 200x150; train 2 random patches+flip/image/epoch; test mean over a 2x2 grid of 4 patches"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write the 36 PNGs and ``labels.csv`` (``image, score, ref``); return the CSV."""
    folder = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(0)
    width, height = SIZE
    rows = []
    for group in range(6):
        ys, xs = np.mgrid[0:height, 0:width]
        texture = 128 + 60 * np.sin(xs / (3 + group)) * np.cos(ys / (5 + group)) + rng.normal(0, 8, (height, width))
        for k in range(6):
            level = (k + rng.random()) / 6
            pixels = np.repeat(texture[..., None], 3, axis=2)
            top, left = int(rng.integers(0, height - 90)), int(rng.integers(0, width - 120))
            pixels[top : top + 90, left : left + 120] += rng.normal(0, 80 * level, (90, 120, 3))
            name = f"g{group}-{k}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name)
            rows.append({"image": name, "score": round(5 - 4 * level, 4), "ref": f"g{group}"})
    csv = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def write_grid(folder: Path, csv: Path, regime: str, epochs: int) -> str:
    """A one-split grid of ``test_resnet`` with heads mse and dor on the generated dataset."""
    grid = {
        "name": f"patches-{regime}", "regime": regime, "backbones": ["test_resnet"], "image_size": PATCH,
        "heads": {"mse": {}, "dor": {"num_bins": 8}}, "datasets": ["mine"], "splits": 1, "seeds": [0],
        "epochs": epochs, "batch_size": 8, "save_weights": False,
        "custom_datasets": {"mine": {"csv": str(csv), "higher_is_better": True, "scale": [1, 5]}},
        "image_policy": {"mine": POLICY},
    }
    path = folder / f"{regime}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return str(path)


def run_grid(path: str, uri: str) -> tuple[MlflowClient, list]:
    """Run a grid with the CLI; return the client and its runs, all checked FINISHED with the policy logged."""
    assert main(["run", "--config", path, "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(load_grid(path).name)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["head"] for r in runs) == ["dor", "mse", "probe"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["image_policy.mine"] == DESCRIBED
        predictions = pd.read_csv(client.download_artifacts(run.info.run_id, PREDICTIONS_ARTIFACT))
        assert int(run.data.params["n_test"]) == len(predictions) > 0
    return client, runs


def test_frozen_features_are_the_mean_over_the_test_patches(dataset: Path, tmp_path: Path, tracking_uri: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "cache"))
    path = write_grid(tmp_path, dataset, "frozen", epochs=2)
    run_grid(path, tracking_uri)
    cached = list((cache_root() / "features").glob("test_resnet-mine-*.npy"))
    assert len(cached) == 1
    features = np.load(cached[0])
    labels = load_custom_labels(dataset, True, (1, 5))
    assert features.shape[0] == len(labels) == 36

    grid = load_grid(path)
    backbone = seeded_backbone("test_resnet", False, CellSeeds(grid.cells()[0]).backbone).eval()
    config = backbone_data_config(backbone)
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    width, height = STORED
    corners = [(top, left) for top in (0, height - PATCH) for left in (0, width - PATCH)]  # the 2 x 2 grid
    for row in (0, 17):
        with Image.open(labels["image"][row]) as file:
            stored = np.asarray(file.convert("RGB").resize(STORED, Image.Resampling.BICUBIC))
        patches = [torch.from_numpy(stored[top : top + PATCH, left : left + PATCH].copy()) for top, left in corners]
        inputs = (torch.stack(patches).permute(0, 3, 1, 2).float() / 255 - mean) / std
        with torch.inference_mode():
            by_hand = backbone(inputs).mean(dim=0).numpy()
        np.testing.assert_allclose(features[row], by_hand, rtol=1e-4, atol=1e-5)
    assert not np.allclose(features[0], features[17])


def test_finetune_heads_of_a_cell_train_on_identical_patches(dataset: Path, tmp_path: Path, tracking_uri: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "cache"))
    seen: list[tuple[tuple[int, ...], str, int]] = []
    train_inputs = regimes.ImageSource.train_inputs

    def recording(self: regimes.ImageSource, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        inputs, per_image = train_inputs(self, indices)
        seen.append((tuple(indices.tolist()), hashlib.sha256(inputs.numpy().tobytes()).hexdigest(), per_image))
        return inputs, per_image

    monkeypatch.setattr(regimes.ImageSource, "train_inputs", recording)
    path = write_grid(tmp_path, dataset, "finetune", epochs=1)
    _, runs = run_grid(path, tracking_uri)
    results = [r for r in runs if r.data.tags["role"] == "result"]
    assert len({r.data.tags["init_hash"] for r in results}) == 1
    assert len({r.data.tags["order_hash"] for r in results}) == 1

    # heads train one after the other, each from a fresh source: the two halves are the two heads' batches
    assert len(seen) % 2 == 0 and seen[0][2] == POLICY["train_patches"]
    mse_batches, dor_batches = seen[: len(seen) // 2], seen[len(seen) // 2 :]
    assert mse_batches == dor_batches
    assert len({digest for _, digest, _ in mse_batches}) == len(mse_batches)  # every batch has its own patches

    grid = load_grid(path)
    cell = grid.cells()[0]
    data = load_cell_data(grid, cell)
    prep = Preprocessing.for_backbone(seeded_backbone("test_resnet", False, CellSeeds(cell).backbone), grid.image_size)
    first_rows = data.train_idx[data.orders[0]][: grid.training.batch_size]
    assert mse_batches[0][0] == tuple(first_rows.tolist())

    def first_batch(seed: int) -> torch.Tensor:
        inputs, per_image = train_inputs(regimes.ImageSource(data.rows, data.policies, prep, seed, "cpu"), first_rows)
        assert per_image == 2 and inputs.shape == (2 * len(first_rows), 3, PATCH, PATCH)
        return inputs

    again = first_batch(CellSeeds(cell).augment)
    assert torch.equal(again, first_batch(CellSeeds(cell).augment))
    assert hashlib.sha256(again.numpy().tobytes()).hexdigest() == mse_batches[0][1]
    assert not torch.equal(again, first_batch(CellSeeds(cell).augment + 1))
