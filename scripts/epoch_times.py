"""Where a grid's training time went, per result run: training steps, validation and test, per epoch.

Reads the per-epoch seconds every run records (``train_s``, ``val_s``, ``input_wait_s``: the training loop's
wait for its next batch of inputs) and its ``score_seconds`` (the test split, scored once) from the MLflow
store, with the run's set sizes and image policy, and writes per run and per head:

* seconds per epoch of training, of validation, and of waiting for inputs (and its share of training);
* patches/s of training (``n_train x train patches / train_s``), validation and test scoring
  (``n x test patches / seconds``).

Usage::

    python scripts/epoch_times.py --grid livec-finetune-cpu --tracking-uri sqlite:///mlruns/mlflow.db \\
        --out results/livec-finetune-cpu/epoch-times

Writes ``epoch_times.csv`` (one row per result run), ``epoch_times.md`` (means per head) and the command's
``provenance.json`` into ``--out`` (a folder of its own: a report folder keeps the report's provenance).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmark.analysis.report_data import ReportError, load_report_data  # noqa: E402
from benchmark.provenance import write_provenance  # noqa: E402
from benchmark.schema import (  # noqa: E402
    COLUMNS,
    CONFIG_ARTIFACT,
    EPOCH_TIMES,
    INPUT_WAIT_S,
    TRAIN_S,
    VAL_S,
)
from benchmark.store import resolve_tracking_uri  # noqa: E402


def epoch_table(uri: str, grid: str) -> pd.DataFrame:
    """One row per successful result run: its per-epoch seconds (means over its epochs) and patches/s."""
    data = load_report_data(uri, grid, [])
    client, runs = data.client, data.usable
    runs = runs[~runs["failed"]]  # a failed run has no config, maybe no curves, no test scoring
    if runs.empty:
        raise SystemExit(f"grid {grid!r} has no successful result run")
    with tempfile.TemporaryDirectory() as tmp:  # the resolved grid every run stores: its image policies
        config = yaml.safe_load(Path(client.download_artifacts(runs[COLUMNS.run_id].iloc[0], CONFIG_ARTIFACT, tmp)).read_text())
    policies = config["image_policies"]
    rows = []
    for run in runs.itertuples():
        history = {key: [m.value for m in client.get_metric_history(run.run_id, key)] for key in EPOCH_TIMES}
        means = {key: sum(values) / len(values) for key, values in history.items()}
        policy = policies[run.dataset]
        rows.append({COLUMNS.head: run.head, COLUMNS.backbone: run.backbone, COLUMNS.split: run.split, COLUMNS.seed: run.seed,
                     "epochs": len(history[TRAIN_S]), **means, "score_s": run.score_seconds,
                     "train_patches_per_s": run.n_train * policy["train_patches"] / means[TRAIN_S],
                     "val_patches_per_s": run.n_val * policy["test_patches"] / means[VAL_S],
                     "test_patches_per_s": run.n_test * policy["test_patches"] / run.score_seconds,
                     "input_wait_share": means[INPUT_WAIT_S] / means[TRAIN_S]})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """Means per head as a Markdown table."""
    means = table.drop(columns=[COLUMNS.backbone, COLUMNS.split, COLUMNS.seed]).groupby(COLUMNS.head, sort=False).mean()
    lines = ["| head | " + " | ".join(means.columns) + " |", "|---|" + "---|" * len(means.columns)]
    lines += [f"| {head} | " + " | ".join(f"{v:.3g}" for v in row) + " |" for head, row in means.iterrows()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--tracking-uri")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        table = epoch_table(resolve_tracking_uri(args.tracking_uri), args.grid)
    except ReportError as exc:  # no such grid, no usable runs: a message, not a traceback
        raise SystemExit(f"error: {exc}") from exc
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "epoch_times.csv", index=False)
    (args.out / "epoch_times.md").write_text(markdown(table))
    write_provenance(args.out, sys.argv, grid=args.grid, n_runs=len(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
