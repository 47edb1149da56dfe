"""Running a grid: planning, cache preparation, executors, and a time estimate.

Exactly once: every run (a head's result, a tuning trial, a probe) is claimed before it starts
(:mod:`benchmark.run.claims`), so a grid can be killed and rerun at will, and launched several times at
once (terminals, a resubmitted Slurm array, ``--workers``), and still ends with one FINISHED run per
unit: a FINISHED unit is skipped, a unit held by another live process is offered again until that
process finishes it or its claim expires (a killed process stops heartbeating; after ``claim_ttl_s``
its unit is taken over), and a head whose tuning was interrupted reuses its FINISHED trial runs.
SQLite stores are opened under a file lock (:mod:`benchmark.store`); an MLflow server is the faster
store for many workers or several nodes.

The closed-form probe depends on a cell's data and initial backbone only, so it runs once per split and
initial backbone: at the grid's first seed for a pretrained backbone, at every seed for a randomly
initialised one (whose weights depend on the seed).

Before any run is claimed, every pending cell's image stores (and frozen features) are built in this
process (not for a Slurm job array, whose jobs build them on the compute nodes), so an image that does not
decode stops the grid before any run exists, naming every such file.
Executors (:mod:`benchmark.executors`): ``local`` runs the cells in this process, ``workers`` in
``--workers`` spawned processes, ``submitit`` as a Slurm job array.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from benchmark.allocator import keep_freed_memory
from benchmark.config import ConfigError, GridConfig
from benchmark.data import DataError
from benchmark.executors import EXECUTORS, Done
from benchmark.run.cell import PROBE_SPEC, CellRun, HeadResult
from benchmark.run.cell_data import load_cell_data
from benchmark.run.claims import ClaimBook
from benchmark.run.estimate import Estimate, estimate_seconds
from benchmark.run.inputs import CellInputs
from benchmark.run.tracking import find_experiment, finished_units, open_experiment
from benchmark.run.tuning import trial_list
from benchmark.run.validate import GridValidationError, validate_grid
from benchmark.schema import (
    PROBE_HEAD,
    ROLE_REFERENCE,
    ROLE_RESULT,
    Cell,
    HeadSpec,
    WorkKey,
)
from benchmark.store import (
    DEFAULT_TTL_S,
    HEARTBEATS_PER_TTL,
    open_client,
    resolve_tracking_uri,
    sqlite_path,
    uri_kind,
)

log = logging.getLogger(__name__)


@dataclass
class CellOutcome:
    """A cell's finished units (empty when everything was already done)."""

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
        return {r.head_label for r in self.results if r.busy}


@dataclass
class GridPlan:
    """What a run of the grid would do: all cells, and the units still to run per cell."""

    grid: GridConfig
    tracking_uri: str
    experiment_id: str
    todo: dict[Cell, set[str]] = field(default_factory=dict)
    """Per cell, the head labels still to run (``probe``: the cell's reference run)."""
    claim_ttl_s: float = DEFAULT_TTL_S
    """A claim whose heartbeat is older than this is taken over (its process is presumed dead)."""
    data_root: str | None = None

    @property
    def n_runs(self) -> int:
        """Number of (cell, head) result runs still to train (the probes not counted)."""
        return sum(len(heads - {PROBE_HEAD}) for heads in self.todo.values())

    def estimate(self, workers: int = 1) -> Estimate:
        """Expected time of the pending work (and its range) on ``workers`` processes, from rates measured here
        (:mod:`benchmark.run.estimate`)."""
        return estimate_seconds(self.grid, self.todo, len(trial_list(self.grid.training, self.grid.tuning)),
                                workers)

    @property
    def retry_s(self) -> float:
        """How long to wait before offering units held by other processes again (one heartbeat)."""
        return self.claim_ttl_s / HEARTBEATS_PER_TTL


def probe_cells(grid: GridConfig) -> set[Cell]:
    """The cells that record the probe: one per split and initial backbone (see the module docstring)."""
    return set(grid.record().probe_cells())


def plan_grid(grid: GridConfig, tracking_uri: str | None = None, dry_run: bool = False,
              data_root: str | None = None, claim_ttl_s: float = DEFAULT_TTL_S,
              command: str | None = None) -> GridPlan:
    """Validate the grid, open the store and the grid's experiment, end expired claims and list the units to do.

    Validation (:func:`benchmark.run.validate.validate_grid`) comes first, so a grid that cannot run leaves the
    store untouched. A dry run skips it (the CLI reports its problems beside the plan) and only reads
    the store (it creates nothing and marks nothing).

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
    plan = GridPlan(grid, uri, "", claim_ttl_s=claim_ttl_s, data_root=data_root)
    database = sqlite_path(uri)
    if dry_run and database is not None and not database.exists():  # nothing to read, and nothing to create
        return _todo(plan, {})
    client = open_client(uri)
    if dry_run:
        plan.experiment_id = find_experiment(client, grid.name) or ""
    else:
        plan.experiment_id = open_experiment(client, uri, grid, command or shlex.join(sys.argv))
        ClaimBook.for_ttl(client, plan.experiment_id, claim_ttl_s).reap_expired()
    return _todo(plan, finished_units(client, plan.experiment_id) if plan.experiment_id else {})


def _todo(plan: GridPlan, finished: dict[WorkKey, str]) -> GridPlan:
    """Fill ``plan.todo`` with every unit without a FINISHED run; refuse runs made with other settings."""
    grid = plan.grid
    changed = []
    with_probe = probe_cells(grid)
    for cell in grid.cells():
        units: list[tuple[str, HeadSpec]] = [(ROLE_REFERENCE, PROBE_SPEC)] if cell in with_probe else []
        units += [(ROLE_RESULT, head_spec) for head_spec in grid.heads]
        heads = set()
        for role, head_spec in units:
            done = finished.get(WorkKey(role, cell.key, head_spec.label))
            if done is None:
                heads.add(head_spec.label)
            elif done != grid.run_config_hash(cell, head_spec):
                changed.append(f"{cell.key} {head_spec.label}")
        if heads:
            plan.todo[cell] = heads
    if changed:
        raise ConfigError(
            f"grid '{grid.name}' in {uri_kind(plan.tracking_uri)} store {plan.tracking_uri} already holds FINISHED "
            f"runs made with other settings ({len(changed)} runs, e.g. {changed[0]}); give the edited grid a new "
            "'name' or delete the old experiment, so old and new runs are never mixed")
    return plan


@dataclass(frozen=True)
class CellWork:
    """One cell's pending units, everything a process needs to run them (what every executor hands out)."""

    grid: GridConfig
    cell: Cell
    heads: frozenset[str]
    tracking_uri: str
    experiment_id: str
    data_root: str | None
    claim_ttl_s: float

    def run(self, threads: int | None = None) -> CellOutcome:
        """Run the units in this process (``threads``: torch's thread count here, or left as it is)."""
        keep_freed_memory()
        if threads:
            torch.set_num_threads(threads)
        start = time.perf_counter()
        runner = CellRun.open(self.grid, self.cell, open_client(self.tracking_uri), self.experiment_id, self.data_root,
                              claim_ttl_s=self.claim_ttl_s)
        return CellOutcome(self.cell, runner.run(todo=set(self.heads)), time.perf_counter() - start)


def prepare_caches(plan: GridPlan) -> None:
    """Build every pending cell's image stores (and, frozen, its features) here, before any run is claimed.

    A store decodes every image once, so this is where a file that passed the header check but does not
    decode (a truncated BMP) shows up: every such file of a dataset is named at once, and the grid stops
    before any run exists.

    Raises
    ------
    GridValidationError
        Naming the dataset and every image that does not decode.
    """
    grid = plan.grid
    first = {}
    for cell in plan.todo:
        first.setdefault((cell.backbone, cell.dataset, cell.test_dataset), cell)
    for cell in tqdm(list(first.values()), desc="caches", unit="backbone×dataset"):
        try:
            CellInputs.open(grid, cell, load_cell_data(grid, cell, plan.data_root)).prepare()
        except DataError as exc:
            raise GridValidationError(f"grid '{grid.name}' ({grid.source}) cannot run; no run was started:\n  - "
                                      f"datasets {cell.dataset}/{cell.test_dataset}: {exc}") from exc


def _work(plan: GridPlan, todo: dict[Cell, set[str]]) -> list[CellWork]:
    return [CellWork(plan.grid, cell, frozenset(heads), plan.tracking_uri, plan.experiment_id, plan.data_root,
                     plan.claim_ttl_s) for cell, heads in todo.items()]


def default_workers(plan: GridPlan) -> int:
    """Worker processes when ``--workers`` is not given: one per core for frozen grids (each trains heads on
    one thread, so the cores never share a cell's threads), else one (a fine-tune cell uses the whole GPU)."""
    if plan.grid.regime != "frozen":
        return 1
    return max(1, min(os.cpu_count() or 1, len(plan.todo)))


def execute(plan: GridPlan, executor: str = "local", workers: int = 1, on_cell: Done | None = None,
            options: dict | None = None) -> list[CellOutcome]:
    """Run every pending unit of the plan.

    Parameters
    ----------
    plan : from :func:`plan_grid`.
    executor : a name of :data:`EXECUTORS`.
    workers : processes of the ``workers`` executor.
    on_cell : called with each cell outcome (the CLI prints a summary line).
    options : executor options (``submitit``: its parameters, e.g. ``{"cluster": "local"}``).

    The caches (image stores, frozen features) are built first, here (:func:`prepare_caches`), by the
    executors that run cells on this machine. The retrying executors offer units that another live process held (``busy``) again every heartbeat
    period until each is FINISHED by someone or taken over after its claim expired, so when they return
    every unit is done (or FAILED here). A submitit array makes one pass; its busy units are left to
    whichever process holds them (or to the next launch).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    chosen = EXECUTORS[executor]
    outcomes: list[CellOutcome] = []

    def done(outcome: CellOutcome) -> None:
        outcomes.append(outcome)
        if on_cell:
            on_cell(outcome)

    if chosen.prepares_caches:
        prepare_caches(plan)
    pending = dict(plan.todo)
    while pending:
        start = len(outcomes)
        chosen.run(_work(plan, pending), workers, done, options or {})
        pending = {o.cell: o.busy for o in outcomes[start:] if o.busy} if chosen.retries else {}
        if pending:
            log.warning("%d unit(s) of %d cell(s) are held by other live processes; offering them again in %.0f s",
                        sum(map(len, pending.values())), len(pending), plan.retry_s)
            time.sleep(plan.retry_s)
    return outcomes


__all__ = ["CellOutcome", "CellWork", "GridPlan", "default_workers", "execute", "plan_grid", "prepare_caches",
           "probe_cells"]
