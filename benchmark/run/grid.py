"""Running a grid: planning, cache preparation, and the local and Slurm (submitit) executors.

Exactly once: every run (a head's result, a tuning trial, a cell's probe) is claimed before it starts
(:mod:`benchmark.run.claims`), so a grid can be killed and rerun at will, and launched several times at
once (terminals, a resubmitted Slurm array, ``--workers``), and still ends with one FINISHED run per
unit: a FINISHED unit is skipped, a unit held by another live process is offered again until that
process finishes it or its claim expires (a killed process stops heartbeating; after ``claim_ttl_s``
its unit is taken over), and a head whose tuning was interrupted reuses its FINISHED trial runs.
SQLite stores are opened under a file lock (:mod:`benchmark.run.store`); an MLflow server is the faster
store for many workers or several nodes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from benchmark.run.cell import CellRunner, HeadResult
from benchmark.run.cell_data import dataset_labels
from benchmark.run.claims import ClaimBook
from benchmark.config import Cell, ConfigError, GridConfig, HeadSpec
from benchmark.data import dataset_info
from benchmark.schema import PROBE_HEAD, ROLE_REFERENCE, ROLE_RESULT
from benchmark.run.store import open_client, sqlite_path
from benchmark.run.tracking import finished_config_hashes, get_experiment_id, resolve_tracking_uri, uri_kind
from benchmark.run.trials import trial_list
from benchmark.run.validate import validate_grid

log = logging.getLogger(__name__)

EXECUTORS = ("local", "submitit")
DEFAULT_CLAIM_TTL_S = 300.0


@dataclass
class CellOutcome:
    """A cell's finished heads (empty when everything was already done)."""

    cell: Cell
    results: list[HeadResult]
    seconds: float

    @property
    def failures(self) -> list[HeadResult]:
        """Heads (and the probe) whose run ended FAILED."""
        return [r for r in self.results if r.error]

    @property
    def busy(self) -> set[str]:
        """Heads (and the probe) another live process held when this cell ran."""
        return {r.head for r in self.results if r.busy}


@dataclass
class GridPlan:
    """What a run of the grid would do: all cells, and the heads still to train per cell."""

    grid: GridConfig
    tracking_uri: str
    experiment_id: str
    todo: dict[Cell, set[str]] = field(default_factory=dict)
    """Per cell, the head labels still to run (``probe``: the cell's reference run)."""
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S
    """A claim whose heartbeat is older than this is taken over (its process is presumed dead)."""

    @property
    def n_runs(self) -> int:
        """Number of (cell, head) result runs still to train (the probes not counted)."""
        return sum(len(heads - {PROBE_HEAD}) for heads in self.todo.values())


def plan_grid(grid: GridConfig, tracking_uri: str | None = None, dry_run: bool = False,
              data_root: str | None = None, claim_ttl_s: float = DEFAULT_CLAIM_TTL_S) -> GridPlan:
    """Validate the grid, open the store, end expired claims and list the (cell, head) runs still to do.

    Validation (:func:`benchmark.run.validate.validate_grid`) comes first, so a grid that cannot run leaves the
    store untouched. A dry run skips it (the CLI reports its problems beside the plan) and only reads
    the store (it creates no experiment and marks nothing).

    Raises
    ------
    GridValidationError
        Listing every problem of the grid (unknown backbone, unreachable weights, bad head, missing data).
    ConfigError
        When the store already holds FINISHED runs of this grid made with other settings.
    """
    if not dry_run:
        validate_grid(grid, data_root)
    uri = resolve_tracking_uri(tracking_uri)
    database = sqlite_path(uri)
    if dry_run and database is not None and not database.exists():  # nothing to read, and nothing to create
        return _todo(GridPlan(grid, uri, "", claim_ttl_s=claim_ttl_s), {})
    client = open_client(uri)
    experiment_id = get_experiment_id(client, uri, grid.name, create=not dry_run)
    if experiment_id and not dry_run:
        ClaimBook(client, experiment_id, heartbeat_s=claim_ttl_s / 10, ttl_s=claim_ttl_s).reap_expired()
    finished = finished_config_hashes(client, experiment_id) if experiment_id else {}
    return _todo(GridPlan(grid, uri, experiment_id or "", claim_ttl_s=claim_ttl_s), finished)


def _todo(plan: GridPlan, finished: dict[tuple[str, str, str, str], str]) -> GridPlan:
    """Fill ``plan.todo`` with every unit without a FINISHED run; refuse runs made with other settings."""
    grid, uri = plan.grid, plan.tracking_uri
    changed = []
    units = [(ROLE_REFERENCE, HeadSpec(PROBE_HEAD, PROBE_HEAD))] + [(ROLE_RESULT, head) for head in grid.heads]
    for cell in grid.cells():
        heads = set()
        for role, head in units:
            done = finished.get((role, cell.key, head.label, ""))
            if done is None:
                heads.add(head.label)
            elif done != grid.run_config_hash(cell, head):
                changed.append(f"{cell.key} {head.label}")
        if heads:
            plan.todo[cell] = heads
    if changed:
        raise ConfigError(
            f"grid '{grid.name}' in {uri_kind(uri)} store {uri} already holds FINISHED runs made with other "
            f"settings ({len(changed)} runs, e.g. {changed[0]}); give the edited grid a new 'name' or delete the "
            "old experiment, so old and new runs are never mixed")
    return plan


def run_cell(grid: GridConfig, cell: Cell, heads: set[str], tracking_uri: str, experiment_id: str,
             data_root: str | None = None, threads: int | None = None,
             claim_ttl_s: float = DEFAULT_CLAIM_TTL_S) -> CellOutcome:
    """Train the given heads of one cell (the unit of work of every executor)."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    runner = CellRunner(grid, cell, open_client(tracking_uri), experiment_id, data_root, claim_ttl_s=claim_ttl_s)
    results = runner.run(todo=heads)
    return CellOutcome(cell, results, time.perf_counter() - start)


def _prepare_caches(plan: GridPlan, data_root: str | None) -> None:
    """Build dataset and feature caches in this process before parallel workers start (frozen regime)."""
    grid = plan.grid
    if grid.regime != "frozen":
        return
    first = {}
    for cell in plan.todo:
        first.setdefault((cell.backbone, cell.dataset, cell.test_dataset), cell)
    for cell in tqdm(list(first.values()), desc="caches", unit="backbone×dataset"):
        CellRunner(grid, cell, open_client(plan.tracking_uri), plan.experiment_id, data_root).prepare()


def execute(plan: GridPlan, executor: str = "local", workers: int = 1, data_root: str | None = None,
            on_cell: Callable[[CellOutcome], None] | None = None, slurm: dict | None = None) -> list[CellOutcome]:
    """Run every pending (cell, head) of the plan.

    Parameters
    ----------
    plan : from :func:`plan_grid`.
    executor : ``local`` (in this process, or ``workers`` processes) or ``submitit`` (a Slurm job array;
        ``slurm`` holds submitit parameters, e.g. ``{"cluster": "local"}`` or partition/gpus/timeout).
    data_root : folder holding the datasets' images (overrides the grid's ``data_root``).
    on_cell : called with each cell outcome (the CLI prints a summary line).

    The local executor offers units that another live process held (``busy``) again every heartbeat
    period until each is FINISHED by someone or taken over after its claim expired, so when it returns
    every unit is done (or FAILED here). A submitit array makes one pass; its busy units are left to
    whichever process holds them (or to the next launch).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    outcomes: list[CellOutcome] = []

    def done(outcome: CellOutcome) -> None:
        outcomes.append(outcome)
        if on_cell:
            on_cell(outcome)

    if not plan.todo:
        return outcomes
    if executor == "submitit":
        for outcome in _submitit(_cell_args(plan, plan.todo, data_root), slurm or {}, plan):
            done(outcome)
        return outcomes
    if workers > 1:
        _prepare_caches(plan, data_root)
    pending = dict(plan.todo)
    while pending:
        rounds = _local_pass(plan, pending, workers, data_root, done)
        pending = {outcome.cell: outcome.busy for outcome in rounds if outcome.busy}
        if pending:
            wait = plan.claim_ttl_s / 10
            log.warning("%d unit(s) of %d cell(s) are held by other live processes; offering them again in %.0f s",
                        sum(map(len, pending.values())), len(pending), wait)
            time.sleep(wait)
    return outcomes


def _cell_args(plan: GridPlan, todo: dict[Cell, set[str]], data_root: str | None) -> list[tuple]:
    return [(plan.grid, cell, heads, plan.tracking_uri, plan.experiment_id, data_root) for cell, heads in todo.items()]


def _local_pass(plan: GridPlan, todo: dict[Cell, set[str]], workers: int, data_root: str | None,
                done: Callable[[CellOutcome], None]) -> list[CellOutcome]:
    """One pass over the given cells, in this process or in ``workers`` spawned processes."""
    args = _cell_args(plan, todo, data_root)
    outcomes = []
    with tqdm(total=len(args), desc=f"grid {plan.grid.name}", unit="cell") as bar:
        if workers <= 1:
            for a in args:
                outcomes.append(run_cell(*a, claim_ttl_s=plan.claim_ttl_s))
                done(outcomes[-1])
                bar.update(1)
            return outcomes
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_cell, *a, threads, plan.claim_ttl_s) for a in args]
            for future in as_completed(futures):
                outcomes.append(future.result())
                done(outcomes[-1])
                bar.update(1)
    return outcomes


def _submitit(args: list[tuple], slurm: dict, plan: GridPlan) -> list[CellOutcome]:
    import submitit

    params = dict(slurm)
    folder = Path(params.pop("folder", Path("mlruns") / "submitit" / plan.grid.name))
    cluster = params.pop("cluster", None)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name=f"dor-bench-{plan.grid.name}", **params)
    columns = list(zip(*args))
    jobs = executor.map_array(run_cell, *columns, [None] * len(args), [plan.claim_ttl_s] * len(args))
    log.info("submitted %d cells as job array %s (logs in %s)", len(jobs), jobs[0].job_id if jobs else "-", folder)
    return [job.result() for job in tqdm(jobs, desc=f"grid {plan.grid.name} (submitit)", unit="cell")]


def estimate_seconds(plan: GridPlan) -> float:
    """Rough wall-clock estimate from measured rates (DESIGN.md): 2-core CPU or one GPU."""
    grid = plan.grid
    gpu = torch.cuda.is_available()
    trials = len(trial_list(grid.training, grid.tuning))
    total = 0.0
    for cell, heads in plan.todo.items():
        n = _n_rows(grid, cell.dataset)
        fits = len(heads - {PROBE_HEAD}) * trials
        if grid.regime == "frozen":
            total += fits * (0.2 + 0.001 * n * grid.training.epochs / 40)
        else:  # training patches at the training rate, validation patches at ~3x (inference only)
            rate = 2500.0 if gpu else 10.0
            policy = grid.image_policies[cell.dataset]
            train, val, _ = grid.split_fractions
            epoch = n * train * policy.train_patches / rate + n * val * policy.test_patches / (3 * rate)
            total += fits * grid.training.epochs * epoch
    if grid.regime == "frozen":
        pairs = {(c.backbone, c.dataset) for c in plan.todo}
        total += sum(_n_rows(grid, d) / (1000.0 if gpu else 40.0) for _, d in pairs)
    return total


def _n_rows(grid: GridConfig, dataset: str) -> int:
    if dataset in grid.custom_datasets:
        return len(dataset_labels(grid, dataset, grid.data_root)[0])
    return dataset_info(dataset).n_rows
