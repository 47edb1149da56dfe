"""Real human-rated images end to end: LIVE Challenge restored from the team's copy, a tiny frozen grid, the report.

The images come from ``../shared/data/clive`` (next to the project's checkout): ``restore.py`` writes the
official release into a temporary folder, checked file by file against its manifest, and the test reads
them from there (the project never copies them). Where that folder is absent the test is skipped and says
where the data comes from.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmark.analysis.report import build_report
from benchmark.cli import main
from benchmark.data import load_labels
from benchmark.schema import PREDICTIONS_ARTIFACT

CLIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "clive"
pytestmark = pytest.mark.skipif(not (CLIVE / "restore.py").is_file(), reason=(
    f"no LIVE Challenge copy at {CLIVE}: the team's copy lives in shared/data/clive beside the checkout "
    "(python3 shared/data/clive/restore.py DIR writes the official release); elsewhere point the suite at your "
    "own copy with --data-root"))


@pytest.fixture(scope="module")
def clive_root(tmp_path_factory):
    """The official LIVE Challenge release, restored (and checked against its manifest) into a temporary folder."""
    root = tmp_path_factory.mktemp("iqa")
    subprocess.run([sys.executable, str(CLIVE / "restore.py"), str(root)], check=True, capture_output=True)
    return root


def test_livec_labels_find_every_restored_image(clive_root):
    labels = load_labels("livec", clive_root)
    assert len(labels) == 1161 and labels["image"].map(lambda p: Path(p).is_file()).all()
    assert labels["mos"].between(3.42, 92.44).all() and labels["ref"].is_unique  # every image its own group
    assert labels.attrs["dataset_info"].higher_is_better


def test_a_tiny_real_grid_lands_in_mlflow_and_reports(clive_root, tmp_path, monkeypatch):
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "cache"))
    subset = load_labels("livec", clive_root).iloc[:60]
    csv = tmp_path / "clive60.csv"
    subset.rename(columns={"mos": "score"})[["image", "score", "ref"]].to_csv(csv, index=False)
    grid = {"name": "clive60", "regime": "frozen", "backbones": {"efficientnet_lite0": {"pretrained": True}},
            "heads": {"mse": {}, "dor": {"num_bins": 28}}, "datasets": ["clive60"], "splits": 2, "seeds": [0],
            "epochs": 2, "batch_size": 16, "tuning": {"lr": [1.0e-3]},
            "custom_datasets": {"clive60": {"csv": str(csv), "higher_is_better": True, "scale": [0, 100],
                                            "image_policy": {"test_patches": 1}}}}
    path = tmp_path / "clive60.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))  # the first head listed is the reference
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", "--config", str(path), "--tracking-uri", uri]) == 0

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("clive60").experiment_id])
    results = [r for r in runs if r.data.tags["role"] == "result"]
    assert sorted(r.data.tags["head"] for r in results) == ["dor", "dor", "mse", "mse"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in results:
        assert run.data.params["image_policy.clive60"].endswith("test mean over the centre patch")
        assert int(run.data.params["n_test"]) == 12 and -1 <= run.data.metrics["test_srcc"] <= 1
        predictions = pd.read_csv(client.download_artifacts(run.info.run_id, PREDICTIONS_ARTIFACT))
        assert len(predictions) == 12 and set(predictions["image"]) <= set(subset["image"])
        assert predictions["mos"].isin(subset["mos"]).all()

    report = build_report("clive60", uri, tmp_path / "report")
    stats = pd.read_csv(report.out_dir / "stats.csv")
    srcc = stats[(stats["metric"] == "srcc") & (stats["target"] == "dataset")]
    assert list(zip(srcc["head_a"], srcc["head_b"])) == [("dor", "mse")] and srcc["n_splits"].item() == 2
    assert (report.out_dir / "report.html").is_file()
