"""Report layer on a synthetic MLflow grid with known effects: files, statistics, tables, missing runs."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.stats import spearmanr
from statsmodels.stats.multitest import multipletests

from benchmark.analysis.report import ReportError, build_report, k_ablation_table
from benchmark.analysis.report_data import ReportData, Scores
from benchmark.cli import main
from benchmark.schema import PREDICTIONS_ARTIFACT, GridRecord, RunRecord
from benchmark.run.synthetic_store import SyntheticStoreError, write_synthetic_grid

GRID = "synthetic"
HEADS = ["mse", "dor", "dor-seed"]
COMPARE = ["dor:mse", "dor-seed:mse", "dor:dor-seed"]
EFFECT = {"dor": 0.05}  # dor beats mse by +0.05 SRCC on every split; dor-seed has no effect
DATASETS = ["bundled", "koniq->livec"]
PAIR_KEYS = ["efficientnet_lite0|bundled->bundled|frozen", "efficientnet_lite0|koniq->livec|frozen"]
N_SPLITS, N_TEST = 10, 60
FILES = [
    "runs.csv", "pairs.csv", "stats.csv", "across_datasets.csv", "missing.csv",
    "table_srcc.md", "table_srcc.tex", "table_srcc.csv", "table_plcc.md", "table_plcc.tex", "table_plcc.csv",
    "summary_pairs.md", "summary_pairs.csv", "forest_srcc.png", "slope_srcc.png",
    "scatter.png", "learning_curves.png", "provenance.json", "health.csv", "tuning_lr.png", "report.html",
]  # no critical_difference.png: two (backbone, dataset) blocks are too few for a Friedman test


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_store")
    uri = f"sqlite:///{root}/mlflow.db"
    write_synthetic_grid(uri, GRID, ["efficientnet_lite0"], HEADS, DATASETS, N_SPLITS, 1, EFFECT, N_TEST, seed=0,
                         compare=COMPARE)
    return root, uri


@pytest.fixture(scope="module")
def report(store):
    root, uri = store
    return build_report(GRID, uri, root / "report", command=["dor-bench", "report"])


@pytest.fixture(scope="module")
def stats_csv(report):
    return pd.read_csv(report.out_dir / "stats.csv")


def _row(stats_csv, pair_key, head_a, head_b, metric="srcc", target="dataset"):
    rows = stats_csv[(stats_csv["pair_key"] == pair_key) & (stats_csv["head_a"] == head_a)
                     & (stats_csv["head_b"] == head_b) & (stats_csv["metric"] == metric)
                     & (stats_csv["analysis"] == "complete-case") & (stats_csv["target"] == target)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_every_file_is_written(report):
    assert sorted(report.files) == sorted(FILES)  # no k_ablation.png: num_bins does not vary
    for name in FILES:
        path = report.out_dir / name
        assert path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report.n_runs, report.n_unfinished, report.n_missing) == (60, 0, 0)
    assert report.n_pairs == 2 * 3 * 2 * N_SPLITS  # pair keys x head pairs x metrics x splits
    assert pd.read_csv(report.out_dir / "missing.csv").empty
    runs = pd.read_csv(report.out_dir / "runs.csv")
    assert len(runs) == 60 + 20 and (runs["role"] == "reference").sum() == 20  # results and one probe per cell


def test_stats_rows_cover_every_cell_pair_metric_and_target(stats_csv):
    assert len(stats_csv) == 24
    expected = {(p, a, b, m, t) for p in PAIR_KEYS for a, b in [("dor", "mse"), ("dor-seed", "mse"), ("dor", "dor-seed")]
                for m in ("srcc", "plcc") for t in ("dataset", "population")}
    assert set(zip(stats_csv["pair_key"], stats_csv["head_a"], stats_csv["head_b"], stats_csv["metric"],
                   stats_csv["target"])) == expected
    assert (stats_csv["n_splits"] == N_SPLITS).all()
    assert (stats_csv["n_train"] == 3 * N_TEST).all() and (stats_csv["n_test"] == N_TEST).all()


@pytest.mark.parametrize("pair_key", PAIR_KEYS)
def test_strong_effect_is_found_and_its_ci_holds_the_truth(stats_csv, pair_key):
    row = _row(stats_csv, pair_key, "dor", "mse")
    population = _row(stats_csv, pair_key, "dor", "mse", target="population")
    assert row["test"] == "paired-t" and row["r"] == 0 and row["ci_low"] < 0.05 < row["ci_high"] and row["p"] < 0.01
    assert population["test"] == "corrected" and "one seed per split" in population["test_note"]  # S = 1
    assert population["p"] == population["p_corrected"] and row["analysis"] == "complete-case"
    assert row["p"] < population["p"]  # the extrapolation is the wider claim
    assert row["mean_delta"] == pytest.approx(0.05, abs=0.01)
    assert row["verdict"] == "a better" and row["p_above"] > 0.95 and 0 < row["mde80"] < 0.05
    assert row["mde80_low"] < row["mde80"] < row["mde80_high"] and np.isnan(row["r_star_significance"])
    if pair_key == PAIR_KEYS[0]:
        assert row["significant"] and row["p_holm"] < 0.01 and not row["descriptive"]
        assert population["r_star_significance"] > population["r"]  # the population test holds up to r*
    else:  # one fixed test set in every split: descriptive only, outside the Holm family, never marked
        assert row["descriptive"] and not row["significant"] and np.isnan(row["p_holm"])
        assert "cross-dataset cell" in row["caveat"] and np.isnan(population["r_star_significance"])


@pytest.mark.parametrize("pair_key", PAIR_KEYS)
def test_null_effect_is_near_zero_and_not_significant(stats_csv, pair_key):
    row = _row(stats_csv, pair_key, "dor-seed", "mse")
    assert abs(row["mean_delta"]) < 0.01
    assert not row["significant"]
    assert row["ci_low"] < 0 < row["ci_high"]
    assert row["verdict"] in ("equivalent", "undecided") and row["p_above"] < 0.95 and row["p_below"] < 0.95
    assert row["p_below"] + row["p_rope"] + row["p_above"] == pytest.approx(1.0)
    assert row["rope"] == 0.01 and row["n_seeds"] == 1 and np.isnan(row["var_seed"])


def test_both_targets_match_their_hand_formulas(report, stats_csv):
    pairs = pd.read_csv(report.out_dir / "pairs.csv")
    d = pairs[(pairs["pair_key"] == PAIR_KEYS[0]) & (pairs["head_a"] == "dor") & (pairs["head_b"] == "mse")
              & (pairs["metric"] == "srcc")].sort_values("split")["delta"].to_numpy()
    assert d.size == N_SPLITS
    dataset = _row(stats_csv, PAIR_KEYS[0], "dor", "mse")  # the paired t-test on the split means
    se = d.std(ddof=1) / np.sqrt(N_SPLITS)
    assert dataset["se_mean"] == pytest.approx(se) and dataset["t"] == pytest.approx(d.mean() / se)
    assert dataset["ci_high"] - dataset["mean_delta"] == pytest.approx(2.2621571627 * se)  # t_{0.975, 9}
    population = _row(stats_csv, PAIR_KEYS[0], "dor", "mse", target="population")
    corrected = np.sqrt((1 / N_SPLITS + N_TEST / (3 * N_TEST)) * d.var(ddof=1))
    assert population["t_corrected"] == pytest.approx(d.mean() / corrected)
    assert population["ci_high"] - population["mean_delta"] == pytest.approx(2.2621571627 * corrected)
    # Each target's interval excludes 0 exactly when its test rejects at 5 %.
    for _, rows in stats_csv.groupby("target"):
        excludes_zero = (rows["ci_low"] > 0) | (rows["ci_high"] < 0)
        assert excludes_zero.tolist() == (rows["p"] < 0.05).tolist()


def test_pairs_average_runs_and_take_differences(report):
    pairs = pd.read_csv(report.out_dir / "pairs.csv")
    runs = pd.read_csv(report.out_dir / "runs.csv")
    runs = runs[runs["role"] == "result"]
    srcc = runs.set_index(["pair_key", "split", "head"])["test_srcc"]
    sample = pairs[pairs["metric"] == "srcc"].head(5)
    for row in sample.itertuples():
        assert row.value_a == pytest.approx(srcc[(row.pair_key, row.split, row.head_a)])
        assert row.value_b == pytest.approx(srcc[(row.pair_key, row.split, row.head_b)])
    assert np.allclose(pairs["delta"], pairs["value_a"] - pairs["value_b"])


def test_holm_is_statsmodels_holm_over_the_within_dataset_cells_per_target_and_metric(stats_csv):
    for _, rows in stats_csv.groupby(["target", "metric"]):
        family = rows[~rows["descriptive"]]
        assert len(family) == 3
        assert np.allclose(family["p_holm"], multipletests(family["p"], method="holm")[1])
        assert rows.loc[rows["descriptive"], "p_holm"].isna().all()


def _latex_rows(text):
    body = text.split("\\midrule\n")[1].split("\\bottomrule")[0]
    return [line for line in body.splitlines() if line.strip()]


@pytest.mark.parametrize("metric", ["srcc", "plcc"])
def test_latex_tables_are_well_formed(report, metric):
    text = (report.out_dir / f"table_{metric}.tex").read_text()
    assert text.count("\\begin{tabular}") == text.count("\\end{tabular}") == 1
    assert text.count("\\toprule") == text.count("\\midrule") == text.count("\\bottomrule") == 1
    spec = re.search(r"\\begin\{tabular\}\{([lc]+)\}", text).group(1)
    assert spec == "llcc"  # backbone, head, two dataset columns
    header = text.split("\\toprule\n")[1].split("\n")[0]
    rows = _latex_rows(text)
    assert len(rows) == len(HEADS) + 1 and "probe (reference)" in rows[-1]
    for line in [header, *rows]:
        assert line.count("&") - line.count("\\&") == len(spec) - 1
        assert line.endswith("\\\\")
    assert "efficientnet\\_lite0" in text and "efficientnet_lite0" not in text
    assert "koniq$\\rightarrow$livec" in header


def _markdown_cells(text):
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return header, [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.parametrize("metric", ["srcc", "plcc"])
def test_bold_marks_the_best_mean_head_per_backbone_and_column(report, metric):
    header, rows = _markdown_cells((report.out_dir / f"table_{metric}.md").read_text())
    assert header[:2] == ["Backbone", "Head"] and header[2:] == ["bundled", "koniq→livec"]
    assert [row[1] for row in rows] == [*HEADS, "probe (reference)"]
    table = pd.read_csv(report.out_dir / f"table_{metric}.csv")
    latex_rows = _latex_rows((report.out_dir / f"table_{metric}.tex").read_text())
    for j, column in enumerate(header[2:], start=2):
        values = [float(re.search(r"\d\.\d{3}", row[j]).group()) for row in rows[:-1]]  # the probe is not ranked
        bold = [i for i, row in enumerate(rows) if row[j].startswith("**")]
        assert bold == [int(np.argmax(values))]
        assert "\\textbf{" in latex_rows[bold[0]].split("&")[j]
        best = table[(table["column"] == column) & table["best"]]
        assert best["head"].tolist() == [rows[bold[0]][1]]
        assert best["mean"].iloc[0] == pytest.approx(max(values), abs=5e-4)
        runs = pd.read_csv(report.out_dir / "runs.csv")
        mean = runs[(runs["head"] == rows[bold[0]][1]) & (runs["role"] == "result")
                    & (runs["pair_key"] == PAIR_KEYS[j - 2])][f"test_{metric}"].mean()
        assert best["mean"].iloc[0] == pytest.approx(mean)
    assert "mean (± sd) over 10 splits" in (report.out_dir / f"table_{metric}.md").read_text()


def test_dagger_marks_significant_differences_from_the_reference(report):
    _, rows = _markdown_cells((report.out_dir / "table_srcc.md").read_text())
    by_head = {row[1]: row[2:] for row in rows}
    assert by_head["dor"][0].endswith("†") and not by_head["dor"][1].endswith("†")  # cross-dataset: descriptive
    assert not any("†" in cell for cell in by_head["mse"] + by_head["dor-seed"] + by_head["probe (reference)"])
    assert "†: differs from mse" in (report.out_dir / "table_srcc.md").read_text()


def test_pairs_summary_covers_the_grids_compared_pairs(report, stats_csv):
    summary = pd.read_csv(report.out_dir / "summary_pairs.csv")
    assert len(summary) == 2 * 3  # two cells x the grid's three compare: pairs
    assert list(zip(summary["head_a"], summary["head_b"]))[:3] == [("dor", "mse"), ("dor-seed", "mse"),
                                                                   ("dor", "dor-seed")]
    first = summary[summary["pair_key"] == PAIR_KEYS[0]].set_index(["head_a", "head_b"])
    assert (first["srcc_a"] > first["srcc_b"]).loc[("dor", "mse")]
    assert first.loc[("dor", "mse"), "p"] == pytest.approx(_row(stats_csv, PAIR_KEYS[0], "dor", "mse")["p"])
    assert first.loc[("dor-seed", "mse"), "rmse_a"] > first.loc[("dor", "dor-seed"), "rmse_a"]  # the seed code's bias
    assert "## Compared pairs" in (report.out_dir / "summary_pairs.md").read_text()


def test_across_datasets_tests_within_dataset_cells_only(report):
    across = pd.read_csv(report.out_dir / "across_datasets.csv")
    rows = across[(across["head_a"] == "dor") & (across["head_b"] == "mse") & (across["metric"] == "srcc")]
    within, cross = (rows[rows["scope"] == scope].iloc[0] for scope in ("within-dataset", "cross-dataset"))
    assert within["n_datasets"] == 1 and within["datasets"] == "bundled->bundled"
    assert within["p_wilcoxon"] == pytest.approx(1.0)  # exact: 2 / 2**1
    assert "cannot reach p < .05" in within["caveat"]
    assert cross["datasets"] == "koniq->livec" and np.isnan(cross["p_wilcoxon"]) and "descriptive" in cross["caveat"]
    assert any("cannot reach p < .05" in w for w in report.warnings)


def test_provenance_records_counts_but_not_the_uri(report, store):
    record = json.loads((report.out_dir / "provenance.json").read_text())
    assert record["grid"] == GRID and record["tracking_uri_kind"] == "sqlite"
    assert record["command"] == "dor-bench report"
    assert (record["n_runs_usable"], record["n_missing"], record["n_pairs"]) == (60, 0, report.n_pairs)
    assert record["compare"] == [["dor", "mse"], ["dor-seed", "mse"], ["dor", "dor-seed"]]
    assert record["machine"]["packages"]["mlflow"] and record["experiment_id"]
    assert str(store[0]) not in json.dumps(record)


def test_incomplete_grid_lists_missing_runs_and_uses_complete_pairs(store, tmp_path):
    root, _ = store
    shutil.copy(root / "mlflow.db", tmp_path / "mlflow.db")  # artifacts stay where the runs point
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(GRID).experiment_id], max_results=1000)
    runs = [r for r in runs if r.data.tags["role"] == "result"]

    def find(pair_key, split, head):
        return next(r.info.run_id for r in runs if r.data.tags["pair_key"] == pair_key
                    and r.data.tags["split"] == str(split) and r.data.tags["head"] == head)

    client.set_terminated(find(PAIR_KEYS[0], 3, "dor"), status="KILLED")  # interrupted: incomplete, not failed
    client.delete_run(find(PAIR_KEYS[1], 7, "mse"))
    result = build_report(None, uri, tmp_path / "report")  # the only grid in the store

    missing = pd.read_csv(tmp_path / "report" / "missing.csv").sort_values("pair_key")
    assert missing[["pair_key", "split", "seed", "head", "status"]].values.tolist() == [
        [PAIR_KEYS[0], 3, 0, "dor", "KILLED"], [PAIR_KEYS[1], 7, 0, "mse", "absent"]]
    assert result.n_missing == 2 and result.n_runs == 58 and result.n_unfinished == 1
    assert any("have no usable run" in w for w in result.warnings)
    stats_csv = pd.read_csv(tmp_path / "report" / "stats.csv")
    assert _row(stats_csv, PAIR_KEYS[0], "dor", "mse")["n_splits"] == N_SPLITS - 1
    assert _row(stats_csv, PAIR_KEYS[0], "dor", "dor-seed")["n_splits"] == N_SPLITS - 1
    assert _row(stats_csv, PAIR_KEYS[0], "dor-seed", "mse")["n_splits"] == N_SPLITS
    assert _row(stats_csv, PAIR_KEYS[1], "dor", "mse")["n_splits"] == N_SPLITS - 1
    assert _row(stats_csv, PAIR_KEYS[1], "dor", "dor-seed")["n_splits"] == N_SPLITS


def test_unknown_grid_lists_the_grids(store, tmp_path):
    with pytest.raises(ReportError, match=rf"grid 'nope' not found.*{GRID}"):
        build_report("nope", store[1], tmp_path)
    with pytest.raises(ReportError, match="unknown metric"):
        build_report(GRID, store[1], tmp_path, metrics=("srcc", "accuracy"))


def test_k_ablation_table_reads_the_logged_number_of_bins():
    runs = pd.DataFrame({
        "head": ["dor", "dor", "dor-k8", "dor-k8", "mse", "mse"], "head_type": ["dor"] * 4 + ["mse"] * 2,
        "head.num_bins": [28, 28, 8, 8, np.nan, np.nan], "pair_key": ["p"] * 6, "split": [0, 1, 0, 1, 0, 1],
        "seed": 0, "backbone": "b", "dataset": "d", "test_dataset": "d", "regime": "frozen", "role": "result",
        "status": "FINISHED", "expired": False, "start_time": range(6),
        "test_srcc": [0.80, 0.84, 0.70, 0.74, 0.6, 0.6]})
    record = GridRecord("g", "frozen", ("b",), {}, (("d", "d"),), (0, 1), (0,), 0.01, ())
    table = k_ablation_table(ReportData.of("g", record, runs, []))
    assert table[["head_type", "num_bins", "n_splits"]].values.tolist() == [["dor", 8, 2], ["dor", 28, 2]]
    assert table["mean"].tolist() == pytest.approx([0.72, 0.82])
    assert table["std"].tolist() == pytest.approx([np.sqrt(0.0008)] * 2)
    assert k_ablation_table(ReportData.of("g", record, runs[runs["head"] != "dor-k8"], [])).empty


def test_synthetic_runs_carry_predictions_that_match_their_metrics(store, tmp_path):
    client = MlflowClient(store[1])
    experiment_id = client.get_experiment_by_name(GRID).experiment_id
    run = client.search_runs([experiment_id], filter_string="tags.head = 'dor-seed' and tags.role = 'result'",
                             max_results=1)[0]
    record = RunRecord.from_mlflow(run)
    assert record.head_type == "dor-seed" and record.status == "FINISHED" and record.head_hparams["num_bins"] == 28
    assert record.cell.key == record.cell.pair_key + f"|split{record.cell.split}|seed0"
    assert (record.sizes.n_train, record.sizes.n_test) == (180, 60)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_srcc")] == list(range(20))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {PREDICTIONS_ARTIFACT, "config.yaml"}
    predictions = pd.read_csv(client.download_artifacts(run.info.run_id, PREDICTIONS_ARTIFACT, str(tmp_path)))
    assert list(predictions.columns) == ["image", "mos", "pred", "ref"] and len(predictions) == N_TEST
    assert record.test["srcc"] == pytest.approx(spearmanr(predictions["mos"], predictions["pred"]).statistic)
    with pytest.raises(SyntheticStoreError, match="already exists"):
        write_synthetic_grid(store[1], GRID, ["b"], ["mse"], ["d"], 1, 1, {}, N_TEST, seed=0)


def test_health_check_flags_a_head_below_the_probe_only(report, tmp_path):
    health = pd.read_csv(report.out_dir / "health.csv")
    assert len(health) == 2 * len(HEADS) and not health["below_probe"].any()  # heads at or above the probe
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    write_synthetic_grid(uri, "handicap", ["efficientnet_lite0"], ["mse", "dor"], ["bundled"], N_SPLITS, 1,
                         {"mse": -0.08}, N_TEST, seed=1)
    result = build_report("handicap", uri, tmp_path / "report")
    health = pd.read_csv(tmp_path / "report" / "health.csv").set_index("head")
    assert health.loc["mse", "below_probe"] and not health.loc["dor", "below_probe"]
    assert health.loc["mse", "gap"] == pytest.approx(-0.08, abs=0.02)
    assert any("mse: mean test SRCC" in w and "below the linear probe" in w for w in result.warnings)
    _, rows = _markdown_cells((tmp_path / "report" / "table_srcc.md").read_text())
    assert rows[0][1] == "mse" and rows[0][2].endswith("‡") and not rows[1][2].endswith("‡")


def _fail_runs(store, tmp_path, head, splits, reason):
    """A copy of the store in which the result runs of ``head`` at ``splits`` (first cell) FAILED; its URI
    and the last run marked."""
    root, _ = store
    shutil.copy(root / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(GRID).experiment_id], max_results=1000)
    for split in splits:
        run = next(r for r in runs if r.data.tags["pair_key"] == PAIR_KEYS[0] and r.data.tags["split"] == split
                   and r.data.tags["head"] == head and r.data.tags["role"] == "result")
        client.set_tag(run.info.run_id, "failure", reason)
        client.set_terminated(run.info.run_id, status="FAILED")
    return uri, run


def test_a_diverged_run_counts_against_its_head(store, tmp_path):
    uri, run = _fail_runs(store, tmp_path, "dor", ["3"], "diverged: 60 non-finite test predictions")
    result = build_report(GRID, uri, tmp_path / "report")
    assert result.n_missing == 0 and any("failed by their head" in w for w in result.warnings)
    pairs = pd.read_csv(tmp_path / "report" / "pairs.csv")
    split3 = pairs[(pairs["pair_key"] == PAIR_KEYS[0]) & (pairs["split"] == 3) & (pairs["head_a"] == "dor")
                   & (pairs["metric"] == "srcc")]
    assert split3.empty  # the differences use the splits where both heads succeeded
    row = _row(pd.read_csv(tmp_path / "report" / "stats.csv"), PAIR_KEYS[0], "dor", "mse")
    assert (row["failures_a"], row["failures_b"], row["n_splits"]) == (1, 0, N_SPLITS - 1)
    runs = pd.read_csv(tmp_path / "report" / "runs.csv").set_index("run_id")
    assert runs.loc[run.info.run_id, "failed"] and np.isnan(runs.loc[run.info.run_id, "test_srcc"])
    _, rows = _markdown_cells((tmp_path / "report" / "table_srcc.md").read_text())
    assert rows[1][1] == "dor" and rows[1][2].endswith("[1 failed]")


def test_critical_difference_needs_ten_independent_dataset_blocks_and_a_friedman_rejection(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    datasets = ["live", "csiq", "tid2013", "kadid10k", "koniq10k", "livec", "spaq", "bundled", "pipal", "flive"]
    backbones = ["efficientnet_lite0", "resnet50"]
    write_synthetic_grid(uri, "ten", backbones, HEADS, datasets, 3, 1, EFFECT, 30, seed=2, probe_effect=None)
    result = build_report("ten", uri, tmp_path / "report")
    assert "critical_difference.png" in result.files
    assert not any("critical-difference" in w for w in result.warnings)
    ranks = pd.read_csv(result.files["ranks.csv"])  # Benavoli et al. (2016): pairwise signed-rank tests, Holm
    dor_mse = ranks[(ranks["head_a"] == "dor") & (ranks["head_b"] == "mse")].iloc[0]
    assert dor_mse["n_blocks"] == 10 and dor_mse["n_a_better"] == 10 and dor_mse["p"] == pytest.approx(2 / 2**10)
    fewer = build_report("ten", uri, tmp_path / "fewer", pairs=[("dor", "mse")])
    assert "critical_difference.png" in fewer.files  # ranks all heads whatever pairs are tested
    from benchmark.analysis.comparisons import rank_blocks
    from benchmark.analysis.report_data import load_runs, usable_runs

    client = MlflowClient(uri)
    usable = usable_runs(load_runs(client, client.get_experiment_by_name("ten").experiment_id), [])
    blocks = rank_blocks(Scores.of(usable), [])
    assert blocks.shape == (10, 3)  # one block per dataset (backbones averaged), not 20 (backbone, dataset) blocks
    warnings = []
    assert rank_blocks(Scores.of(usable[usable["dataset"].isin(datasets[:8])]), warnings) is None
    assert "only 8 complete" in warnings[0] and "not independent blocks" in warnings[0]
    crossed = usable[usable["dataset"].isin(datasets[:9])].copy()
    crossed.loc[crossed["dataset"] == datasets[8], "test_dataset"] = datasets[0]  # a cross-dataset cell X→Y
    warnings = []
    assert rank_blocks(Scores.of(crossed), warnings) is None and "only 8 complete" in warnings[0]


def test_no_critical_difference_diagram_when_friedman_does_not_reject(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    write_synthetic_grid(uri, "null", ["efficientnet_lite0"], HEADS,
                         ["live", "csiq", "tid2013", "kadid10k", "koniq10k", "livec", "spaq", "bundled", "pipal",
                          "flive"], 3, 1, {}, 30, seed=3, probe_effect=None)
    result = build_report("null", uri, tmp_path / "report")
    assert "critical_difference.png" not in result.files and "ranks.csv" in result.files
    assert any("no evidence that the heads differ" in w for w in result.warnings)


def test_two_seeds_get_the_variance_components_test(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    write_synthetic_grid(uri, "vc", ["efficientnet_lite0"], HEADS, ["bundled"], N_SPLITS, 2, EFFECT, N_TEST, seed=4,
                         compare=COMPARE)
    result = build_report("vc", uri, tmp_path / "report")
    stats_csv = pd.read_csv(result.files["stats.csv"])
    population = stats_csv[stats_csv["target"] == "population"]
    assert (population["test"] == "vc-worst-share").all() and (stats_csv["n_seeds"] == 2).all()
    row = _row(stats_csv, PAIR_KEYS[0], "dor", "mse", target="population")
    runs = pd.read_csv(result.files["runs.csv"])
    runs = runs[runs["role"] == "result"].pivot_table(index=["split", "seed"], columns="head", values="test_srcc")
    d = (runs["dor"] - runs["mse"]).unstack("seed").to_numpy()  # J x S
    m, msw = d.mean(axis=1), ((d - d.mean(axis=1, keepdims=True)) ** 2).sum() / (N_SPLITS * (2 - 1))
    var_split = max(0.0, m.var(ddof=1) - msw / 2)
    r = N_TEST / (3 * N_TEST)
    assert row["var_seed"] == pytest.approx(msw) and row["var_split"] == pytest.approx(var_split)
    assert row["se_mean"] == pytest.approx(np.sqrt(var_split * (1 / N_SPLITS + r) + msw / (2 * N_SPLITS)))
    assert row["r"] == pytest.approx(r) and row["mean_delta"] == pytest.approx(d.mean())
    assert row["mde80"] > 0 and row["verdict"] == "a better" and row["significant"]
    assert main(["report", "--grid", "vc", "--tracking-uri", uri, "--out", str(tmp_path / "r15"),
                 "--split-correlation", "1.5"]) == 0  # a measured, larger r, from the command line
    row15 = _row(pd.read_csv(tmp_path / "r15" / "stats.csv"), PAIR_KEYS[0], "dor", "mse", target="population")
    assert row15["r"] == 1.5 and row15["n_test"] == row["n_test"]
    assert row15["se_mean"] == pytest.approx(np.sqrt(var_split * (1 / N_SPLITS + 1.5) + msw / (2 * N_SPLITS)))
    assert json.loads((tmp_path / "r15" / "provenance.json").read_text())["split_correlation"] == 1.5


def test_failures_are_tested_apart_and_scored_as_the_worst_run_in_a_sensitivity_row(store, tmp_path):
    uri, _ = _fail_runs(store, tmp_path, "mse", ["2", "5"], "diverged: non-finite test predictions")
    result = build_report(GRID, uri, tmp_path / "report")
    stats_csv = pd.read_csv(result.files["stats.csv"])
    rows = stats_csv[(stats_csv["pair_key"] == PAIR_KEYS[0]) & (stats_csv["head_a"] == "dor")
                     & (stats_csv["head_b"] == "mse") & (stats_csv["metric"] == "srcc")
                     & (stats_csv["target"] == "dataset")].set_index("analysis")
    primary, worst = rows.loc["complete-case"], rows.loc["worst-rank"]
    assert (primary["failures_a"], primary["failures_b"], primary["n_splits"]) == (0, 2, N_SPLITS - 2)
    assert primary["p_failures"] == pytest.approx(0.5)  # exact sign test: 2 discordant splits, both one way
    assert worst["n_splits"] == N_SPLITS and worst["descriptive"] and np.isnan(worst["p_holm"])
    assert worst["mean_delta"] > primary["mean_delta"]  # mse's failures now count as its worst runs
    parser = _Cells("verdicts")
    parser.feed(result.files["report.html"].read_text())
    assert any("failed runs as the worst run" in row.get("pair", "") for row in parser.rows)


class _Cells(HTMLParser):
    """The text of every ``<td data-col=...>`` of the table with a given id, row by row."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows, self.column, self.images = table_id, False, [], None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.inside = attrs.get("id") == self.table_id
        elif tag == "img":
            self.images.append(attrs["src"])
        elif self.inside and tag == "tr":
            self.rows.append({})
        elif self.inside and tag in ("td", "th") and "data-col" in attrs:
            self.column = attrs["data-col"]
            self.rows[-1][self.column] = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        if tag in ("td", "th"):
            self.column = None

    def handle_data(self, data):
        if self.inside and self.column:
            self.rows[-1][self.column] += data


def test_html_report_shows_the_numbers_of_stats_csv(report, stats_csv):
    text = (report.out_dir / "report.html").read_text()
    parser = _Cells("verdicts")
    parser.feed(text)
    srcc = stats_csv[(stats_csv["metric"] == "srcc") & (stats_csv["target"] == "dataset")]
    rows, pair_key = [], None
    for row in parser.rows:
        if set(row) == {"pair_key"}:
            pair_key = row["pair_key"]
        elif row:
            rows.append((pair_key, row))
    assert len(rows) == len(srcc)
    by_key = {(p.replace("|", " · ").replace("->", "→"), f"{r.head_a} − {r.head_b}"): r
              for p, r in zip(srcc["pair_key"], srcc.itertuples())}
    for pair_key, row in rows:
        expected = srcc.loc[by_key[(pair_key, row["pair"])].Index]
        assert float(row["mean_delta"]) == pytest.approx(expected["mean_delta"], abs=5e-4)
        low, high = (float(v) for v in row["interval"].strip("[]").split(","))
        assert (low, high) == pytest.approx((expected["ci_low"], expected["ci_high"]), abs=5e-4)
        below, rope, above = (float(v) for v in row["posterior"].split("/"))
        assert (below, rope, above) == pytest.approx(tuple(expected[["p_below", "p_rope", "p_above"]]), abs=5e-3)
        assert row["verdict"].startswith(expected["verdict"]) and float(row["p"]) == pytest.approx(
            expected["p"], rel=0.05)
    assert parser.images and all((report.out_dir / image).is_file() for image in parser.images)
    assert "http://" not in text and "https://" not in text  # self-contained: nothing fetched
    health = _Cells("probe")
    health.feed(text)
    assert len([r for r in health.rows if r]) == 2 * len(HEADS)
    blind = _Cells("blind")
    blind.feed(text)
    dataset = stats_csv[(stats_csv["metric"] == "srcc") & (stats_csv["target"] == "dataset") & ~stats_csv["descriptive"]]
    assert [float(r["mde80"]) for r in blind.rows if r] == pytest.approx(dataset["mde80"].tolist(), abs=5e-4)
    population = _Cells("population")
    population.feed(text)
    shown = [r for r in population.rows if r]
    expected = stats_csv[(stats_csv["metric"] == "srcc") & (stats_csv["target"] == "population")
                         & ~stats_csv["descriptive"]]
    assert [float(r["r"]) for r in shown] == pytest.approx(expected["r"].tolist(), abs=5e-3)
    assert [r["r_star_verdict"] for r in shown] == [
        "never" if np.isinf(v) else f"{v:.2g}" for v in expected["r_star_verdict"]]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)")
def test_html_report_renders_in_chromium(report, tmp_path):
    shot = tmp_path / "page.png"
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=600,1200", f"--screenshot={shot}",
               (report.out_dir / "report.html").as_uri()]
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_ui_links_open_each_grid_on_its_runs_table(store):
    from benchmark.cli import ui_links

    experiment_id = MlflowClient(store[1]).get_experiment_by_name(GRID).experiment_id
    assert ui_links(store[1], "127.0.0.1", 5000) == [
        f"  {GRID}: http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning"]


def test_tuning_flags_a_head_whose_val_srcc_rises_at_the_edge_only(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    write_synthetic_grid(uri, "tuned", ["efficientnet_lite0"], ["mse", "dor"], ["bundled"], N_SPLITS, 2, {}, N_TEST,
                         seed=3, lr_profile={"mse": [0.0, 0.02, 0.05], "dor": [0.0, 0.03, 0.0]})
    result = build_report("tuned", uri, tmp_path / "report")
    health = pd.read_csv(tmp_path / "report" / "health.csv").set_index("head")
    assert health.loc["mse", "tuning_edge"] and health.loc["mse", "peak"] == pytest.approx(3e-3)
    assert health.loc["mse", "edge_gain"] == pytest.approx(0.03, abs=0.01)  # over the best inner value
    assert not health.loc["dor", "tuning_edge"] and health.loc["dor", "peak"] == pytest.approx(1e-3)
    assert int(health.loc["dor", "selected"].split()[1].split(":")[1]) >= 15  # mostly its inner optimum
    assert any("mse: the selected lr sits on an edge" in w and "widen `tuning:`" in w for w in result.warnings)
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    result_runs = runs[runs["role"] == "result"]
    trial_columns = ["val_srcc[lr=0.0003]", "val_srcc[lr=0.001]", "val_srcc[lr=0.003]"]
    picked = result_runs[trial_columns].to_numpy().argmax(axis=1)
    assert (result_runs["tuned.lr"].to_numpy() == np.array([3e-4, 1e-3, 3e-3])[picked]).all()
    assert (result_runs["best_val_srcc"].to_numpy() == result_runs[trial_columns].max(axis=1).to_numpy()).all()
