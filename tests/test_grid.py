"""End-to-end: tiny real grids on CPU into a temporary MLflow store, resume, crash recovery, executors."""

import io
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.cli import main
from benchmark.config import load_grid
from benchmark.run.grid import execute, plan_grid
from benchmark.metrics import METRIC_NAMES
from benchmark.schema import TAGS, TRACEBACK_ARTIFACT, RunRecord


def _runs(uri, grid="tiny"):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(grid)
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def _record(run) -> RunRecord:
    return RunRecord.from_mlflow(run)


def _finished_per_key(runs, role="result"):
    keys = [(r.data.tags["cell_key"], r.data.tags["head"], r.data.tags.get("trial", "")) for r in runs
            if r.info.status == "FINISHED" and r.data.tags["role"] == role]
    return pd.Series(keys, dtype=object).value_counts()


def _role(runs, role):
    return [r for r in runs if r.data.tags["role"] == role]


def test_frozen_grid_lands_in_mlflow_and_resumes(grid_file, tracking_uri):
    path = grid_file()
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri]) == 0
    client, runs = _runs(tracking_uri)
    assert len(runs) == 2 * (3 + 1) and all(r.info.status == "FINISHED" for r in runs)
    results, probes = _role(runs, "result"), _role(runs, "reference")
    assert len(results) == 6 and len(probes) == 2 and {r.data.tags["head"] for r in probes} == {"probe"}
    for run in results + probes:
        record = _record(run)
        assert record.placeable and record.grid == "tiny" and record.git_sha and record.config_hash
        assert set(record.test) == set(METRIC_NAMES)
        assert record.sizes.n_test == len(_predictions(client, run))
        assert [ref.context for ref in record.inputs] == ["training", "validation", "test"]
        assert [ref.rows for ref in record.inputs] == [record.sizes.n_train, record.sizes.n_val, record.sizes.n_test]
        assert run.data.tags["mlflow.source.name"] == "dor-bench" and run.info.run_name == record.run_name
    for run in results:
        assert len(client.get_metric_history(run.info.run_id, "val_srcc")) >= 1
        assert _record(run).head_init == "prior" and _record(run).trial == "base"
    for probe in probes:
        record = _record(probe)
        assert record.tuned["alpha"] > 0 and "lr" not in record.settings and record.fit.best_epoch == -1
        assert set(record.settings) == {"regime", "label_norm", "split_fractions", "image_size"}
    predictions = _predictions(client, results[0])
    assert list(predictions.columns) == ["image", "mos", "pred", "ref"] and predictions["mos"].between(1, 5).all()
    assert predictions.groupby("ref").size().min() > 1  # whole references: what the report's bootstrap resamples

    by_cell = {}
    for run in results:
        by_cell.setdefault(run.data.tags["cell_key"], []).append(run.data.tags)
    assert len(by_cell) == 2
    for tags in by_cell.values():  # matched pairs: identical shared init and sample order
        assert len({t["init_hash"] for t in tags}) == 1 and len({t["order_hash"] for t in tags}) == 1
        assert {t["head"] for t in tags} == {"mse", "dor", "dor-seed"}
    assert len({tags[0]["order_hash"] for tags in by_cell.values()}) == 2

    assert main(["run", "--config", path, "--tracking-uri", tracking_uri]) == 0
    assert len(_runs(tracking_uri)[1]) == 8  # a rerun adds nothing
    edited = grid_file(epochs=4)  # same grid name, other settings: refused, nothing mixed
    assert main(["run", "--config", edited, "--tracking-uri", tracking_uri]) == 1
    assert len(_runs(tracking_uri)[1]) == 8
    path = grid_file()  # the factory rewrites one file: back to the original settings

    stuck = results[0]  # as if its process had died mid-run: RUNNING, its heartbeat long past a 1 s ttl
    client.update_run(stuck.info.run_id, status="RUNNING")
    time.sleep(1.5)
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri, "--claim-ttl", "1"]) == 0
    _, again = _runs(tracking_uri)
    statuses = {r.info.run_id: r.info.status for r in again}
    assert statuses[stuck.info.run_id] == "FAILED" and len(again) == 9
    counts = _finished_per_key(again)
    assert len(counts) == 6 and (counts == 1).all()
    redone = next(r for r in _role(again, "result") if r.info.status == "FINISHED"
                  and r.data.tags["cell_key"] == stuck.data.tags["cell_key"] and r.data.tags["head"] == stuck.data.tags["head"])
    assert redone.data.metrics["test_srcc"] == stuck.data.metrics["test_srcc"]  # training is deterministic on CPU


def _predictions(client, run):
    path = client.download_artifacts(run.info.run_id, "predictions.csv")
    return pd.read_csv(path)


def test_tuning_trials_are_child_runs_and_val_selects(grid_file, tracking_uri):
    path = grid_file(splits=1, heads={"mse": {}, "dor": {"num_bins": 8}}, tuning={"lr": [1.0e-3, 1.0e-2]})
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri]) == 0
    client, runs = _runs(tracking_uri)
    results, trials = _role(runs, "result"), _role(runs, "trial")
    assert len(results) == 2 and len(trials) == 4 and len(_role(runs, "reference")) == 1
    assert len({r.data.tags["init_hash"] for r in results + trials}) == 1  # every trial starts from the pair's init
    for result in results:
        children = [t for t in trials if t.data.tags[TAGS.parent_run_id] == result.info.run_id]
        assert sorted(t.data.tags["trial"] for t in children) == ["lr=0.001", "lr=0.01"]
        assert not any(k.startswith("test_") for t in children for k in t.data.metrics)  # test never read by trials
        best = max(children, key=lambda t: (t.data.metrics["best_val_srcc"], t.data.tags["trial"] == "lr=0.001"))
        assert result.data.tags["trial"] == best.data.tags["trial"]
        assert _record(result).tuned == _record(best).tuned == {"lr": float(best.data.tags["trial"][3:])}
        assert result.data.metrics["best_val_srcc"] == best.data.metrics["best_val_srcc"]
        assert _record(result).tuning == ("lr=0.001", "lr=0.01")
        assert [ref.name for ref in _record(children[0]).inputs] == ["tiny split 0 train", "tiny split 0 val"]


def test_resume_mid_tuning_reuses_finished_trials(grid_file, tracking_uri):
    path = grid_file(splits=1, heads={"dor": {"num_bins": 8}}, tuning={"lr": [1.0e-3, 1.0e-2]})
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri]) == 0
    client, runs = _runs(tracking_uri)
    result = _role(runs, "result")[0]
    lost, kept = sorted(_role(runs, "trial"), key=lambda t: t.data.tags["trial"])
    client.update_run(result.info.run_id, status="RUNNING")  # killed after one trial: its result never ended
    client.delete_run(lost.info.run_id)
    time.sleep(1.5)
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri, "--claim-ttl", "1"]) == 0
    _, runs = _runs(tracking_uri)
    assert (_finished_per_key(runs, "trial") == 1).all() and len(_finished_per_key(runs, "trial")) == 2
    assert (_finished_per_key(runs) == 1).all() and len(_finished_per_key(runs)) == 1
    new = next(r for r in _role(runs, "result") if r.info.status == "FINISHED")
    assert new.info.run_id != result.info.run_id
    assert {t.data.tags[TAGS.parent_run_id] for t in _role(runs, "trial")} == {new.info.run_id}  # the kept trial is adopted
    assert next(t for t in _role(runs, "trial") if t.info.run_id == kept.info.run_id)
    assert new.data.metrics["test_srcc"] == result.data.metrics["test_srcc"]


def test_a_failing_head_does_not_stop_the_grid(grid_file, tracking_uri, monkeypatch, capsys):
    from baselines.mse import MSEHead
    from baselines.registry import HEADS, HPARAMS

    class Broken(MSEHead):
        name = "broken"

        def loss(self, outputs, u):
            raise RuntimeError("this head always fails")

    monkeypatch.setitem(HEADS, "broken", Broken)
    monkeypatch.setitem(HPARAMS, "broken", {})
    path = grid_file(splits=2, heads={"mse": {}, "broken": {}})
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri]) == 1
    assert "broken: RuntimeError: this head always fails" in capsys.readouterr().err
    client, runs = _runs(tracking_uri)
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 2 and {r.data.tags["head"] for r in failed} == {"broken"}
    assert failed[0].data.tags["failure"] == "RuntimeError: this head always fails"
    traceback = client.download_artifacts(failed[0].info.run_id, TRACEBACK_ARTIFACT)
    assert "this head always fails" in open(traceback).read()
    assert len(_finished_per_key(runs)) == 2  # both mse runs
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri]) == 1  # a rerun retries only the failures
    _, again = _runs(tracking_uri)
    assert len(again) == len(runs) + 2 and (_finished_per_key(again) == 1).all()


def test_dry_run_prints_cells_and_estimate(grid_file, tracking_uri):
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["run", "--config", grid_file(), "--tracking-uri", tracking_uri, "--dry-run"]) == 0
    text = out.getvalue()
    assert "test_resnet|tiny->tiny|frozen|split1|seed0" in text and "estimated time" in text
    assert "6 runs to do" in text
    assert MlflowClient(tracking_uri).get_experiment_by_name("tiny") is None  # a dry run writes nothing


def test_finetune_regime_and_predict(grid_file, tracking_uri, tiny_dataset, tmp_path):
    # offline-pretrained efficientnet_lite0: predict must rebuild its TF-padded architecture exactly
    path = grid_file(regime="finetune", splits=1, epochs=1, heads={"mse": {}, "dor": {"num_bins": 8}},
                     backbones={"efficientnet_lite0": {"pretrained": True}})
    plan = plan_grid(load_grid(path), tracking_uri)
    outcomes = execute(plan)
    assert [len(o.results) for o in outcomes] == [3]  # probe, mse, dor
    client, runs = _runs(tracking_uri)
    runs = _role(runs, "result")
    assert len({r.data.tags["init_hash"] for r in runs}) == 1
    assert all("model.pt" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in runs)

    from benchmark.predict import load_trained_model, score_images

    run = runs[0]
    predictions = _predictions(client, run)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    images = list(predictions["image"][:3]) + [str(broken)]
    table = score_images(load_trained_model(run.info.run_id, tracking_uri), images)
    assert list(table["image"]) == images
    assert table["error"].iloc[3] and np.isnan(table["score"].iloc[3])
    np.testing.assert_allclose(table["score"][:3], predictions["pred"][:3], rtol=1e-4, atol=1e-4)


def test_predict_frozen_matches_logged_predictions(grid_file, tracking_uri):
    path = grid_file(splits=1, heads={"dor": {"num_bins": 8}})
    execute(plan_grid(load_grid(path), tracking_uri))
    client, runs = _runs(tracking_uri)
    runs = _role(runs, "result")
    from benchmark.predict import load_trained_model, score_images

    predictions = _predictions(client, runs[0])
    table = score_images(load_trained_model(runs[0].info.run_id, tracking_uri), list(predictions["image"][:5]))
    np.testing.assert_allclose(table["score"], predictions["pred"][:5], rtol=1e-4, atol=1e-4)


def test_submitit_local_executor(grid_file, tracking_uri, tmp_path):
    path = grid_file(splits=1, heads={"mse": {}, "dor": {"num_bins": 8}})
    plan = plan_grid(load_grid(path), tracking_uri)
    outcomes = execute(plan, "submitit", options={"cluster": "local", "folder": str(tmp_path / "jobs"),
                                                  "timeout_min": 10})
    assert len(outcomes) == 1 and {r.head_label for r in outcomes[0].results} == {"probe", "mse", "dor"}
    _, runs = _runs(tracking_uri)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)


def test_sigkill_mid_grid_then_rerun_completes(grid_file, tracking_uri):
    path = grid_file(splits=4, epochs=8)
    command = [sys.executable, "-m", "benchmark.cli", "run", "--config", path, "--tracking-uri", tracking_uri,
               "--workers", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                runs = _runs(tracking_uri)[1]
            except Exception:  # the store may not exist yet or be locked mid-write
                runs = []
            statuses = [r.info.status for r in runs if r.data.tags.get("role") == "result"]
            if statuses.count("FINISHED") >= 2 and "RUNNING" in statuses:  # killed in the middle of a head's run
                break
            time.sleep(0.2)
        assert process.poll() is None, "the grid finished before it could be killed; make it longer"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    _, partial = _runs(tracking_uri)
    assert sum(r.info.status == "FINISHED" for r in partial) < 16
    assert any(r.info.status == "RUNNING" for r in partial)  # the kill left a run to recover (its claim expires)
    result = subprocess.run(command + ["--claim-ttl", "5"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    _, runs = _runs(tracking_uri)
    counts = _finished_per_key(runs)
    assert len(counts) == 4 * 3 and (counts == 1).all()
    assert not any(r.info.status == "RUNNING" for r in runs)


def test_missing_dataset_fails_before_training(grid_file, tracking_uri, tmp_path):
    path = grid_file(datasets=["koniq10k"])
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["run", "--config", path, "--tracking-uri", tracking_uri, "--data-root", str(tmp_path)]) == 1
    assert "datasets.koniq10k:" in err.getvalue() and "cannot run; nothing was started" in err.getvalue()
    assert MlflowClient(tracking_uri).get_experiment_by_name("tiny") is None


def test_check_lists_unreadable_images(tmp_path, capsys):
    from PIL import Image

    from benchmark.data.datasets import read_label_file

    paths = read_label_file("live")["image"].tolist()
    for rel in paths:
        file = tmp_path / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (90, 120, 200)).save(file)
    broken = [tmp_path / paths[3], tmp_path / paths[500]]
    for file in broken:
        file.write_bytes(file.read_bytes()[:20])
    assert main(["check", "live", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"live: {len(paths)} images, 2 unreadable" in out
    assert all(str(file) in out for file in broken)


@pytest.mark.real_workers
def test_frozen_grids_default_to_one_worker_per_core_and_fine_tuning_to_one(grid_file, tracking_uri, monkeypatch):
    from benchmark.run import grid as grid_module

    monkeypatch.setattr(grid_module.os, "cpu_count", lambda: 16)
    plan = plan_grid(load_grid(grid_file(splits=3)), tracking_uri, dry_run=True)
    assert grid_module.default_workers(plan) == len(plan.todo) == 3  # never more workers than cells
    monkeypatch.setattr(grid_module.os, "cpu_count", lambda: 2)
    assert grid_module.default_workers(plan) == 2
    finetune = plan_grid(load_grid(grid_file(regime="finetune")), tracking_uri, dry_run=True)
    assert grid_module.default_workers(finetune) == 1


def test_a_lost_claim_stops_its_training_at_the_next_epoch_and_leaves_the_head_to_its_taker(grid_file, tracking_uri,
                                                                                            monkeypatch):
    import benchmark.run.cell as cell_module

    checked, taken = [], []
    real_check = cell_module._claims_check

    def losing_dor_once(held):
        check = real_check(held)

        def after_epoch():
            checked.append(tuple(head.head_spec.label for head in held))
            for head in held:  # what the heartbeat thread does once another process expired the run
                if head.head_spec.label == "dor" and not taken:
                    taken.append(head.result.run_id)
                    head.result._heartbeat.lost.set()
            check()

        return after_epoch

    monkeypatch.setattr(cell_module, "_claims_check", losing_dor_once)
    path = grid_file(splits=1, heads={"mse": {}, "dor": {"num_bins": 8}}, epochs=4, early_stopping={"patience": 4})
    assert main(["run", "--config", path, "--tracking-uri", tracking_uri, "--claim-ttl", "2"]) == 0
    client, runs = _runs(tracking_uri)
    # together (the grid file lists dor first): stopped after the first epoch; mse trained on alone; the dor
    # unit, left to its taker, was offered again, its abandoned claim expired, and dor trained afresh
    assert checked == [("dor", "mse")] + [("mse",)] * 4 + [("dor",)] * 4
    abandoned = client.get_run(taken[0])
    assert abandoned.info.status == "FAILED" and abandoned.data.tags["failure"].startswith("claim expired")
    finished = [r for r in _role(runs, "result") if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["head"] for r in finished) == ["dor", "mse"]
    assert all(len(client.get_metric_history(r.info.run_id, "val_srcc")) == 4 for r in finished)
