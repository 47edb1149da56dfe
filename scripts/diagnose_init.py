"""Why does the MSE head with PyTorch's default init fall below the linear probe? An ablation of its output layer.

The init-ablation grid flags ``mse-default`` (PyTorch's init) 0.13 SRCC below the ridge probe while ``mse``
(``init: prior``) is not. This script trains the MSE head in every cell of that grid through the suite's own
cell code (the cell's shared trunk init, order, dropout stream and features; one learning rate, so only the
output layer differs) with four starting points of its output layer:

* ``prior`` — weights zero, bias at the training mean (the suite's default);
* ``default`` — PyTorch's init: random weights, bias near 0, so the first predictions are near 0 while the
  targets average ~0.73;
* ``default weights, bias at mean`` — PyTorch's random weights, only the offset removed;
* ``zero weights, bias 0`` — no random weights, only the offset left.

It prints (and writes to ``--out/summary.json``) the mean first prediction, val SRCC after the first epoch,
the best val SRCC, its epoch and the selected epoch's test SRCC, averaged over the cells.

Usage: python scripts/diagnose_init.py --out results/init-diagnosis [--lr 0.001]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmark.config import load_grid
from benchmark.provenance import write_provenance  # noqa: E402
from benchmark.run.cell_data import load_cell_data  # noqa: E402
from benchmark.run.inputs import CellInputs  # noqa: E402
from benchmark.run.training import fit, predict_u  # noqa: E402
from benchmark.run.tuning import trial_list  # noqa: E402
from benchmark.schema import COLUMNS, VAL_SRCC, HeadSpec  # noqa: E402  (after the telemetry switch)

STARTS = ("prior", "default", "default weights, bias at mean", "zero weights, bias 0")


@torch.no_grad()
def _start(head: torch.nn.Module, start: str, mean: float) -> None:
    """Change the output layer of a head built with PyTorch's init into the named starting point."""
    if start == "default weights, bias at mean":
        head.linear.bias.fill_(mean)
    elif start == "zero weights, bias 0":
        head.linear.weight.zero_()
        head.linear.bias.zero_()


def diagnose(inputs: CellInputs, start: str, settings) -> dict[str, float]:
    """Train the MSE head of one cell from one starting point; the cell's shared streams as in the grid."""
    data = inputs.data
    spec = HeadSpec("mse", "mse", {}, "prior" if start == "prior" else "default")
    model, head = inputs.build(spec)
    _start(head, start, float(data.targets[data.train_idx].mean()))
    first = predict_u(model, head, inputs.features, data.train_idx, 256, inputs.device)
    torch.manual_seed(inputs.seeds.train)
    result = fit(model, head, inputs.features, data.targets, data.train_idx, data.val_idx, data.orders, settings,
                 inputs.device, val_truth=data.rank_truth[data.val_idx])
    test = predict_u(model, head, inputs.features, data.test_idx, 256, inputs.device)
    return {"target_mean": float(data.targets[data.train_idx].mean()), "first_prediction": float(first.mean()), "val_srcc_epoch0": result.curves[VAL_SRCC][0],
            COLUMNS.best_val_srcc: result.best_val_srcc, COLUMNS.best_epoch: result.best_epoch,
            COLUMNS.test_srcc: float(spearmanr(test, data.rank_truth[data.test_idx]).statistic)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lr", type=float, default=1e-3, help="the one learning rate (default: the middle trial)")
    args = parser.parse_args()
    start_time = time.perf_counter()
    grid = load_grid("init-ablation")
    settings = next(t.settings for t in trial_list(grid.training, grid.tuning) if t.settings.lr == args.lr)
    rows = {start: [] for start in STARTS}
    for cell in grid.cells():
        inputs = CellInputs.open(grid, cell, load_cell_data(grid, cell))
        for start in STARTS:
            rows[start].append(diagnose(inputs, start, settings))
    summary = {"lr": args.lr, "n_cells": len(grid.cells()),
               "starts": {start: {k: float(np.mean([r[k] for r in values])) for k in values[0]}
                          for start, values in rows.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_provenance(args.out, ["python", "scripts/diagnose_init.py", *sys.argv[1:]],
                     duration_s=round(time.perf_counter() - start_time, 1))
    for start, means in summary["starts"].items():
        print(f"{start:30s} first prediction {means['first_prediction']:.3f}  val@epoch0 {means['val_srcc_epoch0']:.3f}"
              f"  best val {means[COLUMNS.best_val_srcc]:.3f} (epoch {means[COLUMNS.best_epoch]:.1f})  test {means[COLUMNS.test_srcc]:.3f}")


if __name__ == "__main__":
    main()
