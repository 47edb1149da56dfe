"""Executors: where a grid's cells run — one registry, each entry of one shape. It imports neither torch, MLflow
nor the run side, so the CLI reads its choices from it without loading them.

An executor takes the pending cells as work items (:class:`~benchmark.run.grid.CellWork`: picklable, with a
``grid`` and ``run(threads=None)``) and makes one pass over them, handing each outcome to ``done``; ``retries`` says whether
:func:`benchmark.run.grid.execute` offers units held by other processes again until they are done (a Slurm job
array makes one pass and leaves them to their holders), ``prepares_caches`` whether the launching process
builds every image store and frozen feature first (the executors that run cells on this machine; a job array's
jobs build or wait for what they need on the compute nodes, so a login node decodes nothing).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

Done = Callable[[Any], None]
"""Called with each cell's outcome as it finishes."""


def _label(work: list) -> str:
    return f"grid {work[0].grid.name}" if work else "grid"


def _local(work: list, workers: int, done: Done, options: dict) -> None:
    """One pass over the cells, in this process."""
    for item in tqdm(work, desc=_label(work), unit="cell"):
        done(item.run())


def worker_threads(workers: int) -> int:
    """Torch threads of each of ``workers`` processes: its share of the CPU cores."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_item(item: Any, threads: int | None = None) -> Any:
    """``item.run(threads)`` as a module-level function (what worker processes and job arrays pickle)."""
    return item.run(threads)


def _workers(work: list, workers: int, done: Done, options: dict) -> None:
    """One pass over the cells in ``workers`` spawned processes, each with its share of the CPU threads."""
    threads = worker_threads(workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool, \
            tqdm(total=len(work), desc=_label(work), unit="cell") as bar:
        for future in as_completed([pool.submit(run_item, item, threads) for item in work]):
            done(future.result())
            bar.update(1)


def _submitit(work: list, workers: int, done: Done, options: dict) -> None:
    """One job per cell in a Slurm job array (``options``: submitit parameters, e.g. ``cluster``, partition)."""
    import submitit

    params = dict(options)
    name = work[0].grid.name if work else "grid"
    folder = Path(params.pop("folder", Path("mlruns") / "submitit" / name))
    executor = submitit.AutoExecutor(folder=folder, cluster=params.pop("cluster", None))
    executor.update_parameters(name=f"dor-bench-{name}", **params)
    jobs = executor.map_array(run_item, work)
    log.info("submitted %d cells as job array %s (logs in %s)", len(jobs), jobs[0].job_id if jobs else "-", folder)
    for job in tqdm(jobs, desc=f"{_label(work)} (submitit)", unit="cell"):
        done(job.result())


@dataclass(frozen=True)
class Executor:
    """One way to run cells: ``run(work, workers, done, options)`` makes one pass over them."""

    name: str
    run: Callable[[list, int, Done, dict], None]
    retries: bool
    prepares_caches: bool
    parallel: bool
    """Whether it runs cells in ``--workers`` processes of this machine (the time estimate divides by them)."""
    description: str


EXECUTORS: dict[str, Executor] = {e.name: e for e in (
    Executor("local", _local, True, True, False, "this process"),
    Executor("workers", _workers, True, True, True, "--workers spawned processes"),
    Executor("submitit", _submitit, False, False, False, "a Slurm job array (submitit)"),
)}


def default_executor(workers: int) -> str:
    """The executor a run without ``--executor`` takes: ``workers`` for more than one worker, else ``local``."""
    return next(e.name for e in EXECUTORS.values() if e.prepares_caches and e.parallel == (workers > 1))


__all__ = ["EXECUTORS", "Done", "Executor", "default_executor", "run_item", "worker_threads"]
