"""The dry run's time estimate: its arithmetic on known rates, and one real timing of the frozen epoch."""

import pytest

import benchmark.run.estimate as estimate
from benchmark.config import parse_grid
from benchmark.data import dataset_info

GRID = {"name": "est", "regime": "frozen", "backbones": ["efficientnet_lite0"], "heads": {"mse": {}, "dor": {}},
        "datasets": ["livec"], "splits": 2, "seeds": [0, 1], "epochs": 30, "early_stopping": {"patience": 6},
        "tuning": {"lr": [1.0e-4, 1.0e-3]}}


def test_frozen_estimate_adds_features_epochs_and_run_overheads(monkeypatch):
    grid = parse_grid(GRID)
    monkeypatch.setattr(estimate, "backbone_rates", lambda *args: (100.0, 0.0, 1280, 224))
    monkeypatch.setattr(estimate, "_frozen_epoch_s", lambda grid, width, n, heads, threads: 0.5)
    todo = {cell: {"probe", "mse", "dor"} if cell.seed == 0 else {"mse", "dor"} for cell in grid.cells()}
    result = estimate.estimate_seconds(grid, todo, trials=2)
    assert result.features_s["efficientnet_lite0"] == pytest.approx(dataset_info("livec").n_rows * 25 / 100.0)
    runs = 4 * 2 * (2 + 1) + 2  # 4 cells x 2 heads x (2 trials + the result), one probe per split
    low, high = 4 * 0.5 * 7 + runs * estimate.RUN_OVERHEAD_S, 4 * 0.5 * 30 + runs * estimate.RUN_OVERHEAD_S
    assert result.training_range_s["efficientnet_lite0"] == pytest.approx((low, high))
    assert result.training_s["efficientnet_lite0"] == pytest.approx((low + high) / 2)
    assert result.total_s == pytest.approx(result.features_s["efficientnet_lite0"] + (low + high) / 2)
    assert "efficientnet_lite0: features" in result.describe() and "total: about" in result.describe()
    shared = estimate.estimate_seconds(grid, todo, trials=2, workers=2)  # the cells' seconds shared, not the features
    assert shared.total_s == pytest.approx(result.features_s["efficientnet_lite0"] + (low + high) / 4)
    assert "shared by 2 worker processes" in shared.describe()
    more = estimate.estimate_seconds(grid, todo, trials=2, workers=16)  # 4 cells: 4 processes get one
    assert more.workers == 4 and more.total_s == pytest.approx(result.features_s["efficientnet_lite0"] + (low + high) / 8)
    finetune = parse_grid({**GRID, "regime": "finetune"})
    monkeypatch.setattr(estimate, "backbone_rates", lambda *args: (100.0, 50.0, 1280, 224))
    tuned = estimate.estimate_seconds(finetune, {c: {"mse", "dor"} for c in finetune.cells()}, trials=2, workers=2)
    assert tuned.workers == 1  # fine-tune workers share one device: nothing is divided


def test_the_frozen_epoch_is_timed_on_the_real_training_loop():
    grid = parse_grid({**GRID, "backbones": ["test_resnet"]})
    before = estimate.torch.get_num_threads()
    seconds = estimate._frozen_epoch_s(grid, 96, 200, frozenset({"mse", "dor"}), threads=1)
    assert 0.0 < seconds < 30.0 and estimate.torch.get_num_threads() == before
