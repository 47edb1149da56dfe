"""The real-run calibration's scoring, on a synthetic pool whose splits are i.i.d. normal: an exact test must
cover the pool's truth at its nominal rate once the truth's own error is allowed for."""

import numpy as np
import pytest

from scripts.calibration import livec


def _pool(mean: float, rng: np.random.Generator, splits: int = 200) -> np.ndarray:
    """[splits, 2 seeds] of per-run differences: split effect sd 0.01, seed noise sd 0.015."""
    return mean + rng.normal(0, 0.01, (splits, 1)) + rng.normal(0, 0.015, (splits, 2))


def test_the_dataset_test_covers_a_normal_pool_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    rows = {row["test"]: row for row in livec.calibrate(_pool(0.03, rng), 1 / 3, 10, 2, 600, rng)}
    dataset = rows["dataset"]
    assert 0.925 <= dataset["coverage_corrected"] <= 0.975  # 600 draws: ±0.018 at 2 SE around 0.95
    assert dataset["coverage"] <= dataset["coverage_corrected"]  # the raw rate misses by the truth's error
    assert dataset["truth_se"] == pytest.approx(np.sqrt(0.01**2 + 0.015**2 / 2) / 10, rel=0.2)
    assert dataset["significant"] > 0.9 and dataset["wrong_direction"] == 0.0  # 0.03 is far from 0
    assert rows["population"]["coverage_corrected"] >= dataset["coverage_corrected"]  # it also allows for r


def test_verdict_rates_read_the_truth_and_the_rope():
    outcomes = [{"low": -0.02, "high": 0.02, "p": 0.5, "verdict": "equivalent", "critical": 2.0},
                {"low": 0.01, "high": 0.05, "p": 0.01, "verdict": "a better", "critical": 2.0},
                {"low": -0.05, "high": -0.01, "p": 0.01, "verdict": "b better", "critical": 2.0}]
    truths, truth_var = np.array([0.0, 0.03, 0.005]), np.zeros(3)
    scored = livec._score(outcomes, truths, truth_var)
    assert scored["coverage"] == pytest.approx(2 / 3)  # the third interval misses 0.005
    assert scored["wrong_direction"] == pytest.approx(1 / 3)  # b better while the truth is positive
    assert scored["false_decision"] == pytest.approx(1 / 3)  # a decisive verdict with the truth inside the ROPE
    assert scored["significant"] == pytest.approx(2 / 3) and scored["verdict_equivalent"] == pytest.approx(1 / 3)
