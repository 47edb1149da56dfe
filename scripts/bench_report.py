"""Time ``build_report`` on a synthetic grid of 1,000 runs (target: <= 10 s for the report).

2 backbones x 5 heads x 5 datasets x 10 splits x 2 seeds = 1,000 FINISHED runs are written into a
SQLite store in a temporary folder (timed separately), then the report is built from it and timed
(wall and CPU time: on a shared machine the CPU time is the steadier figure).
``--store DIR`` keeps the store in DIR and reuses it on the next call (only the report is re-timed).

Usage::

    python scripts/bench_report.py [--store DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmark.analysis.report import build_report  # noqa: E402  (after the telemetry switch)
from benchmark.run.synthetic_store import write_synthetic_grid  # noqa: E402

GRID = "bench-report"
BACKBONES = ["efficientnet_lite0", "resnet50"]
HEADS = ["mse", "dor", "dor-seed", "dor-k8", "coral"]
DATASETS = ["livec", "koniq10k", "kadid10k", "tid2013", "koniq10k->livec"]
EFFECT = {"dor": 0.03, "dor-k8": 0.02, "coral": 0.01}


def _run(store: Path, repeats: int) -> None:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    marker = store / "complete"
    if not marker.exists():
        start = time.perf_counter()
        write_synthetic_grid(uri, GRID, BACKBONES, HEADS, DATASETS, n_splits=10, n_seeds=2, effect=EFFECT,
                             n_test=200, seed=0)
        marker.touch()
        print(f"wrote 1000 synthetic runs in {time.perf_counter() - start:.1f} s")
    times, cpu_times = [], []
    for i in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = build_report(GRID, uri, store / f"report{i}", command=sys.argv)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
        print(f"build_report: {times[-1]:.2f} s wall, {cpu_times[-1]:.2f} s CPU "
              f"(load average {os.getloadavg()[0]:.1f}; {result.n_runs} runs, {result.n_stats_rows} stats rows, "
              f"{len(result.files)} files)")
    print(f"build_report median over {repeats}: {statistics.median(times):.2f} s wall, "
          f"{statistics.median(cpu_times):.2f} s CPU (target <= 10 s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="keep the synthetic store here and reuse it (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=1, help="report builds to time (default 1)")
    args = parser.parse_args()
    if args.store:
        args.store.mkdir(parents=True, exist_ok=True)
        _run(args.store, args.repeats)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            _run(Path(tmp), args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
