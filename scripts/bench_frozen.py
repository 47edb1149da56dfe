"""Where a frozen-regime cell's time goes, and what training its models together saves.

On one cell of a grid (default: the shipped default grid's first cell; its features are built first and
cached, outside the timings), with the global thread count set by ``--threads``:

* ``one by one``: every (head, tuning trial) trained alone with :func:`benchmark.run.training.fit`, as the
  suite did before (the same models, seeds and batches);
* ``together``: the same jobs in one :func:`benchmark.run.training.fit_frozen` call (what
  :func:`benchmark.run.tuning.train_trials` does for a frozen cell), with the largest difference between the
  two in any val SRCC curve point (they train the same models: it should be 0 or float rounding);
* ``whole cell``: :meth:`benchmark.run.cell.CellRun.run` into a temporary SQLite store — claims, the probe,
  training, scoring, artifacts — so the share of the store and the probe is the difference.

Prints wall and CPU seconds per stage (CPU seconds are the steadier figure on a shared machine).

Usage::

    python scripts/bench_frozen.py [--config default] [--threads 1] [--lrs 3e-4 1e-3 3e-3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import torch  # noqa: E402  (after the telemetry switch)

from benchmark.config import load_grid  # noqa: E402
from benchmark.run.cell import CellRun  # noqa: E402
from benchmark.run.cell_data import load_cell_data  # noqa: E402
from benchmark.run.inputs import CellInputs  # noqa: E402
from benchmark.run.tracking import open_experiment  # noqa: E402
from benchmark.run.training import fit  # noqa: E402
from benchmark.run.tuning import TrialJob, train_trials, trial_list  # noqa: E402
from benchmark.schema import VAL_SRCC  # noqa: E402
from benchmark.store import open_client  # noqa: E402


def timed(label: str, work) -> object:
    """Run ``work()`` and print its wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    print(f"{label:<28} wall {time.perf_counter() - wall:7.2f} s   cpu {time.process_time() - cpu:7.2f} s   "
          f"(load average {os.getloadavg()[0]:.1f})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lrs", type=float, nargs="*", help="tuning budget (default: the grid's)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the grid's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.config)
    if args.lrs:
        grid = replace(grid, tuning=(("lr", tuple(args.lrs)),))
    if args.batch_size:
        grid = replace(grid, training=replace(grid.training, batch_size=args.batch_size))
    cell = grid.cells()[0]
    data = load_cell_data(grid, cell)
    inputs = CellInputs.open(grid, cell, data)
    _ = inputs.features  # built and cached outside the timings
    jobs = [TrialJob(head, trial) for head in grid.heads for trial in trial_list(grid.training, grid.tuning)]
    print(f"cell {cell.key}: {len(jobs)} models ({len(grid.heads)} heads x {len(jobs) // len(grid.heads)} trials), "
          f"{len(data.train_idx)} training rows, {args.threads} thread(s)")

    def one_by_one() -> list:
        fits = []
        for job in jobs:
            model, head = inputs.build(job.head_spec)
            torch.manual_seed(inputs.seeds.train)
            fits.append(fit(model, head, inputs.features, data.targets, data.train_idx, data.val_idx, data.orders,
                            job.trial.settings, inputs.device, val_truth=data.rank_truth[data.val_idx]))
        return fits

    alone = timed("one by one (fit)", one_by_one)
    together = timed("together (fit_frozen)", lambda: train_trials(inputs, jobs))
    gap = max(abs(a - b) for first, second in zip(alone, together, strict=True)
              for a, b in zip(first.curves[VAL_SRCC], second.fit.curves[VAL_SRCC], strict=True))
    epochs = [len(f.curves[VAL_SRCC]) for f in alone]
    print(f"largest val SRCC difference between the two: {gap:.2e}; epochs run per model: min {min(epochs)}, "
          f"mean {sum(epochs) / len(epochs):.1f}, max {max(epochs)} of {grid.training.epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = open_client(uri)
        experiment_id = open_experiment(client, uri, grid, "bench_frozen")
        timed("whole cell (CellRun.run)", lambda: CellRun.open(grid, cell, client, experiment_id).run())


if __name__ == "__main__":
    main()
