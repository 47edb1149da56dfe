"""Fail fast: a grid that cannot run is rejected before any experiment or run exists."""

import io
import os
import time
from contextlib import redirect_stderr

import pandas as pd
import pytest
from PIL import Image
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.run.validate import weights_problem


def _run(path, tracking_uri, *extra):
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["run", "--config", path, "--tracking-uri", tracking_uri, *extra])
    return code, err.getvalue()


def _store_untouched(tracking_uri):
    db = tracking_uri.removeprefix("sqlite:///")
    return not os.path.exists(db) or MlflowClient(tracking_uri).get_experiment_by_name("tiny") is None


@pytest.mark.parametrize("overrides, expected", [
    ({"heads": {"mse": {}, "dor": {"num_bins": 1}}}, "key 'heads.dor.num_bins': head type 'dor': hyper-parameter "
                                                      "'num_bins' must be >= 2, got 1"),
    ({"backbones": ["efficientnet_lite9"]}, "backbones.efficientnet_lite9: timm knows no model of that name "
                                            "(closest timm names: efficientnet_lite4"),
    ({"heads": {"mse": {}, "ordinal": {}}}, "key 'heads.ordinal': unknown head type 'ordinal'"),
    ({"heads": {"sord": {"alpha": -1.0}}}, "key 'heads.sord.alpha': head type 'sord': hyper-parameter 'alpha' "
                                           "must be > 0.0, got -1.0"),
    ({"heads": {"dor-seed": {"min_score": 1.0, "max_score": 0.0}}}, "heads.dor-seed: max_score must exceed min_score"),
    ({"backbones": {"test_resnet": {"pretrained": "/nowhere/weights.safetensors"}}},
     "weights file /nowhere/weights.safetensors does not exist"),
])
def test_invalid_grids_write_nothing(grid_file, tracking_uri, overrides, expected):
    code, err = _run(grid_file(**overrides), tracking_uri)
    assert code == 1 and expected in err
    assert _store_untouched(tracking_uri)


def _with_image(grid_file, tiny_dataset, row, image):
    """A grid on the tiny dataset with the image of one row replaced."""
    labels = pd.read_csv(tiny_dataset)
    labels.loc[row, "image"] = str(image)
    csv = image.parent / f"labels-{image.stem}.csv"
    labels.to_csv(csv, index=False)
    return grid_file(custom_datasets={"tiny": {"csv": str(csv), "higher_is_better": True, "scale": [1, 5]}})


def test_a_missing_image_is_named_before_anything_runs(grid_file, tracking_uri, tiny_dataset, tmp_path):
    code, err = _run(_with_image(grid_file, tiny_dataset, 3, tmp_path / "gone.png"), tracking_uri)
    assert code == 1 and "datasets.tiny:" in err and "gone.png" in err
    assert _store_untouched(tracking_uri)


def test_images_smaller_than_the_patch_are_named_from_their_headers_before_anything_runs(
        grid_file, tracking_uri, tiny_dataset, tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "thumb.png")
    code, err = _run(_with_image(grid_file, tiny_dataset, 2, tmp_path / "thumb.png"), tracking_uri)
    assert code == 1 and "datasets.tiny: 1 images are smaller than the 64x64 patch" in err
    assert "thumb.png (40x30)" in err
    assert _store_untouched(tracking_uri)


def test_unreachable_hub_weights_fail_in_seconds(grid_file, tracking_uri, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network: nothing cached, no hub
    assert weights_problem("efficientnet_lite0", True) is None  # offline package weights need no hub
    start = time.perf_counter()
    code, err = _run(grid_file(backbones={"resnet18": {"pretrained": True}}), tracking_uri)
    assert code == 1 and "backbones.resnet18.pretrained" in err and "local Hugging Face cache" in err
    assert time.perf_counter() - start < 30 and _store_untouched(tracking_uri)


def test_dry_run_lists_the_problems_beside_the_plan(grid_file, tracking_uri, capsys):
    assert main(["run", "--config", grid_file(backbones=["test_resnet", "efficientnet_lite9"]), "--tracking-uri",
                 tracking_uri, "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert "test_resnet|tiny->tiny|frozen|split0|seed0" in out and "image policies" in out
    assert "backbones.efficientnet_lite9: timm knows no model of that name" in err


def _with_images(grid_file, tiny_dataset, replaced, **overrides):
    """A grid on the tiny dataset with the images of some rows replaced ({row: path})."""
    labels = pd.read_csv(tiny_dataset)
    for row, image in replaced.items():
        labels.loc[row, "image"] = str(image)
    csv = next(iter(replaced.values())).parent / "labels-replaced.csv"
    labels.to_csv(csv, index=False)
    return grid_file(custom_datasets={"tiny": {"csv": str(csv), "higher_is_better": True, "scale": [1, 5]}},
                     **overrides)


def test_every_file_with_an_unreadable_header_is_named_before_anything_runs(grid_file, tracking_uri, tiny_dataset,
                                                                             tmp_path):
    noise = {row: tmp_path / f"noise{row}.jpg" for row in (4, 9)}
    for path in noise.values():
        path.write_bytes(os.urandom(3000))
    code, err = _run(_with_images(grid_file, tiny_dataset, noise), tracking_uri)
    assert code == 1 and "cannot run; nothing was started" in err and "2 image file(s) cannot be decoded" in err
    assert all(str(path) in err for path in noise.values())
    assert _store_untouched(tracking_uri)


@pytest.mark.parametrize("regime", ["frozen", "finetune"])
def test_truncated_images_stop_a_grid_of_several_cells_before_any_run_naming_every_one(grid_file, tracking_uri,
                                                                                     tiny_dataset, tmp_path, regime):
    labels = pd.read_csv(tiny_dataset)
    cut = {row: tmp_path / f"cut{row}.png" for row in (5, 11)}  # headers intact: they pass the header check
    for row, path in cut.items():
        path.write_bytes(open(labels["image"][row], "rb").read()[:3000])
    path = _with_images(grid_file, tiny_dataset, cut, splits=2, seeds=[0, 1], regime=regime)
    code, err = _run(path, tracking_uri)
    assert code == 1 and "cannot run; no run was started" in err and "2 image file(s) cannot be decoded" in err
    assert all(f"{image}: " in err for image in cut.values()) and "truncated" in err
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
