"""dor-bench plan: designs from a pilot grid's variance components."""

import io
from contextlib import redirect_stdout
from dataclasses import replace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from benchmark.analysis import stats
from benchmark.analysis.design import SPLIT_STEPS, design_plan, splits_for_target
from benchmark.analysis.report_data import ReportError
from benchmark.cli import main
from benchmark.schema import GRID_TAG, GridRecord
from benchmark.run.synthetic_store import write_synthetic_grid

HEADS = ["mse", "dor"]


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('pilot')}/mlflow.db"
    write_synthetic_grid(uri, "pilot", ["efficientnet_lite0"], HEADS, ["bundled", "koniq->livec"], 6, 2,
                         {"dor": 0.02}, 60, seed=5)
    return uri


def test_the_plan_uses_the_pilots_variance_components(pilot):
    plan = design_plan("pilot", pilot)
    assert set(plan["pair_key"]) == {"efficientnet_lite0|bundled->bundled|frozen"}  # within-dataset cells only
    assert [tuple(d) for d in plan[["n_splits", "n_seeds"]].to_numpy()] == list(stats.DEFAULT_DESIGNS)
    row = plan.iloc[0]
    expected = stats.design_table(stats.VarianceComponents(row["var_split"], row["var_seed"]), row["r"])
    assert np.allclose(plan["mde80"], expected["mde80"]) and (plan["test"] == expected["test"]).all()
    assert np.allclose(plan["mde80_dataset"], expected["mde80_dataset"])
    assert (plan["mde80_dataset"] < plan["mde80"]).all()  # this dataset's answer needs no overlap term
    assert row["r"] == pytest.approx(1 / 3) and row["var_seed"] > 0


def test_the_plan_assumes_the_grids_split_correlation(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    write_synthetic_grid(uri, "set-r", ["efficientnet_lite0"], HEADS, ["bundled"], 4, 2, {}, 60, seed=7,
                         tuning=None, probe_effect=None)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("set-r")
    record = GridRecord.from_json(experiment.tags[GRID_TAG])
    client.set_experiment_tag(experiment.experiment_id, GRID_TAG, replace(record, split_correlation=0.5).to_json())
    assert (design_plan("set-r", uri)["r"] == 0.5).all()  # as the report reads it (GridRecord.assumed_r)


def test_a_target_finds_the_fewest_splits_of_the_scan():
    components = stats.VarianceComponents(0.0046, 0.0069)
    j = splits_for_target(components, 2, 0.05)
    before = SPLIT_STEPS[SPLIT_STEPS.index(j) - 1]
    mde = stats.design_table(components, 0.32, [(before, 2), (j, 2)])["mde80_dataset"].to_numpy()
    assert mde[0] > 0.05 >= mde[1]
    assert splits_for_target(components, 2, 0.001) is None  # beyond the scan's 1,000 splits


def test_a_one_seed_pilot_cannot_plan(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    write_synthetic_grid(uri, "one", ["efficientnet_lite0"], HEADS, ["bundled"], 6, 1, {}, 60, seed=6)
    with pytest.raises(ReportError, match=r"seeds: \[0, 1\]"):
        design_plan("one", uri)


def test_plan_command_prints_each_pair_and_the_unreachable_targets(pilot):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["plan", "--grid", "pilot", "--tracking-uri", pilot, "--target-mde", "0.05"]) == 0
    text = out.getvalue()
    assert "efficientnet_lite0|bundled->bundled|frozen  dor − mse" in text and "var_seed" in text
    assert text.count("vc-worst-share") + text.count("vc-satterthwaite") + text.count("corrected") \
        + text.count("out of reach") == 4
    assert "mde80_dataset" in text and "assumed r 0.333" in text
