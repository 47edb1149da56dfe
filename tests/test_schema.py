"""One run schema: real and synthetic runs carry the same names, records round-trip, the report needs no harness."""

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.schema import (CLAIM_PREFIX, GRID_TAG, BackboneParams, Cell, DatasetRef, FitSummary, GridRecord,
                              HeadSpec, RunRecord, Sizes)
from benchmark.run.synthetic_store import write_synthetic_grid


def _key_sets(uri: str, grid: str) -> dict[str, tuple[set, set, set]]:
    """Per role: the union of the tag, param and metric names of the grid's runs."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(grid).experiment_id], max_results=1000)
    sets: dict[str, tuple[set, set, set]] = {}
    for run in runs:
        tags, params, metrics = sets.setdefault(run.data.tags["role"], (set(), set(), set()))
        tags |= {t for t in run.data.tags if not t.startswith(CLAIM_PREFIX)}  # the claim protocol's own tags
        params |= set(run.data.params)
        metrics |= set(run.data.metrics)
    return sets


def test_real_and_synthetic_runs_carry_the_same_names(grid_file, tracking_uri, tmp_path):
    heads = {"mse": {}, "dor": {"num_bins": 8}}
    path = grid_file(splits=1, heads=heads, tuning={"lr": [1.0e-3, 3.0e-3]})
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri]) == 0
    synthetic_uri = f"sqlite:///{tmp_path / 'synthetic.db'}"
    write_synthetic_grid(synthetic_uri, "tiny", ["test_resnet"], ["mse", "dor-k8"], ["tiny"], 1, 1, {}, 20, seed=0,
                         tuning=(1.0e-3, 3.0e-3))
    real, synthetic = _key_sets(tracking_uri, "tiny"), _key_sets(synthetic_uri, "tiny")
    assert set(real) == set(synthetic) == {"result", "trial", "reference"}
    for role in real:
        for kind, got, want in zip(("tags", "params", "metrics"), synthetic[role], real[role], strict=True):
            assert got == want, f"{role} {kind}: synthetic-only {sorted(got - want)}, real-only {sorted(want - got)}"
    experiments = [MlflowClient(uri).get_experiment_by_name("tiny").tags for uri in (tracking_uri, synthetic_uri)]
    assert set(experiments[0]) == set(experiments[1]) and GRID_TAG in experiments[0]
    assert experiments[0]["mlflow.experimentKind"] == "custom_model_development"


class _Run:
    """What :meth:`RunRecord.from_mlflow` reads of an MLflow run, from a record's own output."""

    def __init__(self, record: RunRecord) -> None:
        tags, params, metrics = record.to_mlflow()
        self.data = type("Data", (), {"tags": tags, "params": params,
                                      "metrics": {k: v for k, v, step in metrics if step == 0}})()
        self.info = type("Info", (), {"run_id": "r1", "status": "FINISHED", "start_time": 5, "artifact_uri": "a"})()
        self.inputs = None


def test_a_record_reads_back_what_it_wrote():
    record = RunRecord(
        grid="g", cell=Cell("resnet50", "koniq10k", "livec", 3, 1, "frozen"), head="dor-k8", head_type="dor",
        role="result", trial="lr=0.001", git_sha="abc", init_hash="i", order_hash="o", config_hash="c",
        settings={"epochs": 30, "split_fractions": [0.6, 0.2, 0.2], "optimizer": "adamw", "image_size": None},
        backbone=BackboneParams(True, "w", {"patch": 224, "mean": [0.5, 0.5, 0.5]}, "cpu"),
        image_policies={"koniq10k": "resize 512x384"}, sizes=Sizes(600, 200, 1161),
        head_hparams={"num_bins": 8, "soft_targets": False}, head_init="prior", tuning=("lr=0.001", "lr=0.003"),
        tuned={"lr": 0.001}, fit=FitSummary(4, 0.71, 2.5, 0), test={"srcc": 0.7, "plcc": 0.72})
    back = RunRecord.from_mlflow(_Run(record))
    assert back.work_key() == record.work_key()
    for name in ("grid", "cell", "head", "head_type", "role", "trial", "settings", "backbone", "image_policies", "sizes",
                 "head_hparams", "head_init", "tuning", "tuned", "fit", "test"):
        assert getattr(back, name) == getattr(record, name), name
    assert record.run_name == "dor-k8 · resnet50 · s3#1"
    assert record.params()["tuned.lr"] == "0.001" and "lr" not in record.params()


def test_grid_record_round_trips():
    record = GridRecord("g", "frozen", ("b",), {}, (("d", "d"),), (0, 1), (0,), 0.01, (("dor", "mse"),),
                        {"lr": (1e-3, 3e-3)})
    assert GridRecord.from_json(record.to_json()) == record and record.reference == "mse"
    assert [c.key for c in record.cells()] == ["b|d->d|frozen|split0|seed0", "b|d->d|frozen|split1|seed0"]


def test_the_probe_rule_is_one_rule_for_the_run_and_the_report():
    import pandas as pd

    from benchmark.analysis.report_data import find_missing

    record = GridRecord("g", "frozen", ("pre", "rand"), {"mse": HeadSpec("mse", "mse")}, (("d", "d"),), (0,), (0, 1),
                        0.01, (), {}, random_init=("rand",))
    assert GridRecord.from_json(record.to_json()) == record
    assert [c.key for c in record.probe_cells()] == ["pre|d->d|frozen|split0|seed0", "rand|d->d|frozen|split0|seed0",
                                                     "rand|d->d|frozen|split0|seed1"]
    empty = pd.DataFrame(columns=["pair_key", "split", "seed", "head", "role", "status", "start_time"])
    probes = pd.DataFrame({"pair_key": ["rand|d->d|frozen"], "split": [0], "seed": [0]})
    missing = find_missing(record, empty, empty, probes)
    missing = missing[missing["head"] == "probe"]
    assert sorted(zip(missing["backbone"], missing["seed"])) == [("pre", 0), ("rand", 1)]


def test_dataset_refs_are_read_back_from_run_inputs():
    from benchmark.schema import _dataset_ref

    class Tag:
        key, value = "mlflow.data.context", "validation"

    class Entry:
        dataset = type("D", (), {"name": "n", "digest": "d", "source": '{"uri": "/data"}', "profile": '{"num_rows": 7}'})()
        tags = [Tag()]

    assert _dataset_ref(Entry()) == DatasetRef("n", "d", "/data", "validation", 7)


@pytest.mark.parametrize("module", ["benchmark.analysis.report", "benchmark.analysis.stats", "benchmark.schema"])
def test_the_report_side_imports_neither_torch_nor_the_harness(module):
    code = (f"import sys, {module}; bad = [m for m in sys.modules if m == 'torch' or m.startswith(('benchmark.run', "
            "'baselines', 'benchmark.heads', 'dor_iqa'))]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_building_a_report_loads_no_torch(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    write_synthetic_grid(uri, "g", ["lite"], ["mse", "dor"], ["bundled"], 3, 1, {}, 20, seed=0)
    code = ("import sys; from benchmark.analysis.report import build_report; "
            f"build_report('g', {uri!r}, {str(tmp_path / 'out')!r}); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('benchmark.run', 'baselines'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


GENERIC_NAMES = {"image", "mos", "ref"}
"""Columns of ``predictions.csv`` that copy the label table's own columns of the same names: ``benchmark.data``
reads and writes label tables by those words, which are not the record's."""
OTHER_VOCABULARIES = {
    "benchmark/config.py": {"regime", "tuning", "head_init", "image_policy."},
    "benchmark/run/synthetic_store.py": {"regime", "tuning", "split"},
    "benchmark/run/seeding.py": {"backbone", "head"},
    "benchmark/provenance.py": {"git_sha", "status"},
    "benchmark/analysis/html.py": {"git_sha"},
    "benchmark/cli.py": {"dataset"},
    "benchmark/executors.py": {"grid"},
    "benchmark/analysis/stats/targets.py": {"dataset"},
    # scripts: keys of a script's own output (JSON, CSV, summary.json), its options and its labels
    "scripts/bench_features.py": {"backbone"},  # features.json's key of the measured backbone
    "scripts/bench_heads.py": {"head"},  # a variable of the torch Timer's statement (its globals)
    "scripts/bench_scale.py": {"dataset", "backbone", "n_train"},  # the stages' figures and options, their JSON keys
    "scripts/bench_throughput.py": {"backbone"},  # the printed JSON's key of --backbone
    "scripts/calibration/__main__.py": {"seed"},  # summary.json's settings: the --seed of the studies
    "scripts/calibration/cross_dataset.py": {"n_train"},  # summary.json's settings: the simulated set size
    "scripts/calibration/effects.py": {"n_train", "n_test"},  # summary.json's settings: the simulated set sizes
    "scripts/calibration/null.py": {"n_train", "n_test"},  # summary.json's settings: the simulated set sizes
    "scripts/calibration/structured.py": {"n_train", "n_test"},  # summary.json's settings: the pool's mean sizes
    # the null grid file's key; grids.csv's column and pair label of a null grid's number; summary.json's keys of
    # --backbone and of the wall seconds of all the grids
    "scripts/calibration/harness.py": {"regime", "grid", "backbone", "train_seconds"},
}
"""Strings equal to a record name that name something else: the grid file's keys (the settings they become
are logged under the same names), seed streams' labels (renaming one would change every seed),
``provenance.json``'s keys (and ``git status``), the command line's ``dataset`` argument, the executors' label
of a grid without work, the dataset target of the statistics (beside the population target), and the scripts'
own output keys, options and labels (committed results keep their keys)."""


def _schema_names() -> set[str]:
    """Every tag, param, metric, curve, column, prefix, status and artifact name the schema declares."""
    from benchmark import schema

    names = {*schema.TAGS, *schema.PARAMS, *schema.COLUMNS, *schema.CURVES, *schema.EPOCH_TIMES,
             *schema.PREDICTION_COLUMNS, *schema.FIT_COLUMNS, *schema.SIZE_COLUMNS}
    names |= {value for key, value in vars(schema).items()
              if key.endswith(("_TAG", "_PREFIX", "_ARTIFACT")) and isinstance(value, str)}
    names |= {schema.RUNNING, schema.FINISHED, schema.FAILED, schema.KILLED, schema.RUN_NAME_TAG}
    record = RunRecord("g", Cell("b", "d", "t", 0, 0, "r"), "h", "t", "trial", trial="x", parent_run_id="p",
                       head_init="prior", tuning=("x",), trial_scores={"x": 1.0})
    return names | set(record.tags()) | set(record.params())


def _literals(path) -> list[tuple[str, int]]:
    """The string constants of a module (f-string parts included), less docstrings and ``__all__``."""
    import ast

    tree = ast.parse(path.read_text())
    skip = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    skip |= {id(constant) for node in ast.walk(tree) if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
             for constant in ast.walk(node.value)}
    return [(node.value, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def test_no_schema_name_is_spelled_outside_the_schema():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = _schema_names() - GENERIC_NAMES
    found = []
    for package in ("benchmark", "dor_iqa", "baselines", "scripts"):
        for path in sorted((root / package).rglob("*.py")):
            module = path.relative_to(root).as_posix()
            if module == "benchmark/schema.py":
                continue
            allowed = OTHER_VOCABULARIES.get(module, set())
            found += [f"{module}:{line} {text!r}" for text, line in _literals(path)
                      if text in names and text not in allowed]
    assert not found, "schema names spelled outside benchmark/schema.py (use its constants):\n" + "\n".join(found)
