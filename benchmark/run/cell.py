"""One cell of a grid, recorded: claims, then the pure training of :mod:`benchmark.run.tuning`, then the runs.

Data flow of a cell: :func:`benchmark.run.cell_data.load_cell_data` (labels, split, label map, order) →
:class:`benchmark.run.inputs.CellInputs` (backbone, features or image patches, initial models) → the
heads' units are claimed (:mod:`benchmark.run.claims`: a result run per head, a trial run per tuning
trial, their children) → :func:`benchmark.run.tuning.train_trials` trains every claimed trial (in the
frozen regime all heads and trials of the cell at once) → each trial run is written, each head's
selection (:func:`benchmark.run.tuning.conclude`) is scored once on the test split and written as its
``result`` run. The closed-form ridge probe (:mod:`benchmark.run.probe`) is the ``reference`` run.

A head that raises ends its runs FAILED (message tag, traceback artifact) and the cell goes on with the
other heads; :attr:`HeadResult.error` tells the caller. A unit held by another live process comes back
``busy`` (its head is offered again later).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from benchmark.config import GridConfig
from benchmark.metrics import compute_metrics
from benchmark.run.cell_data import input_refs, load_cell_data
from benchmark.run.claims import Claim, ClaimBook, ClaimLost, Outcome, State
from benchmark.run.inputs import CellInputs
from benchmark.run.probe import PROBE_ALPHAS, fit_probe
from benchmark.run.tracking import RunWriter, claim, new_record
from benchmark.run.training import EpochCheck
from benchmark.run.tuning import (
    HeadOutcome,
    TrainedTrial,
    TrialJob,
    conclude,
    train_trials,
    trial_list,
)
from benchmark.schema import (
    CONFIG_ARTIFACT,
    DIVERGED,
    PREDICTION_COLUMNS,
    PREDICTIONS_ARTIFACT,
    PROBE_HEAD,
    ROLE_REFERENCE,
    ROLE_RESULT,
    ROLE_TRIAL,
    TAGS,
    WEIGHTS_ARTIFACT,
    Cell,
    FitSummary,
    HeadSpec,
    RunRecord,
    Sizes,
)
from benchmark.store import DEFAULT_TTL_S

log = logging.getLogger(__name__)

PROBE_SPEC = HeadSpec(PROBE_HEAD, PROBE_HEAD)
"""The reference run's place among the heads of a grid (its label and type)."""


@dataclass(frozen=True)
class HeadResult:
    """Summary of one (cell, head) unit; ``metrics`` is empty when it failed (``error`` says why) or when
    another live process holds it right now (``busy``: offer it again later)."""

    head_label: str
    metrics: dict[str, float]
    error: str = ""
    busy: bool = False


@dataclass
class _HeadClaims:
    """What a head holds before training: its result run, its claimed trials, trials recorded earlier."""

    head_spec: HeadSpec
    result: Claim
    trials: dict[str, Claim] = field(default_factory=dict)
    recorded: dict[str, float] = field(default_factory=dict)

    @property
    def claims(self) -> tuple[Claim, ...]:
        """Every claimed run of the head: its trials, then its result (the order they are closed in)."""
        return (*self.trials.values(), self.result)


def _lost(head_claims: _HeadClaims) -> bool:
    """Whether another process took over any of this head's runs."""
    return any(claimed.lost for claimed in head_claims.claims)


def _claims_check(held: list[_HeadClaims]) -> EpochCheck:
    """An epoch check that raises :class:`~benchmark.run.claims.ClaimLost` once another process has taken
    over any of these heads' runs (their results would be discarded: stop training at the epoch's end)."""

    def check() -> None:
        for head_claims in held:
            for claimed in head_claims.claims:
                claimed.check()

    return check


class CellRun:
    """Runs and records the units of one cell (the probe, each head with its tuning trials)."""

    def __init__(self, grid: GridConfig, cell: Cell, client: MlflowClient, book: ClaimBook, inputs: CellInputs):
        self.grid, self.cell, self.client, self.book = grid, cell, client, book
        self.inputs, self.data = inputs, inputs.data
        self.trials = trial_list(grid.training, grid.tuning)

    @classmethod
    def open(cls, grid: GridConfig, cell: Cell, client: MlflowClient, experiment_id: str, data_root: str | None = None,
             device: str | None = None, claim_ttl_s: float = DEFAULT_TTL_S) -> CellRun:
        """The cell ready to run: its data loaded (:func:`~benchmark.run.cell_data.load_cell_data`), its backbone
        loaded (:meth:`CellInputs.open`), its claims kept in ``experiment_id`` of ``client``'s store."""
        data = load_cell_data(grid, cell, data_root)
        return cls(grid, cell, client, ClaimBook.for_ttl(client, experiment_id, claim_ttl_s),
                   CellInputs.open(grid, cell, data, device))

    def run(self, todo: set[str] | None = None) -> list[HeadResult]:
        """Run the units named in ``todo`` (head labels, ``probe`` for the reference; default: all) that no
        process has done or holds."""
        todo = {PROBE_HEAD, *(h.label for h in self.grid.heads)} if todo is None else todo
        results = [result for result in [self._probe()] if result] if PROBE_HEAD in todo else []
        held: list[_HeadClaims] = []
        for head_spec in (h for h in self.grid.heads if h.label in todo):
            claimed = self._claim_head(head_spec)
            if isinstance(claimed, _HeadClaims):
                held.append(claimed)
            elif claimed is not None:
                results.append(claimed)
        trained = self._train(held)
        for head_claims in held:
            results.append(self._finish_head(head_claims, trained[head_claims.head_spec.label]))
        return results

    # ---- records ----------------------------------------------------------------------------------

    def record(self, head_spec: HeadSpec, role: str, **fields) -> RunRecord:
        """A record of this cell's run of ``head_spec`` with everything the cell knows before training."""
        data, inputs = self.data, self.inputs
        probe = role == ROLE_REFERENCE
        return new_record(
            self.grid, self.cell, head_spec, role,
            tuple(f"alpha={a:g}" for a in PROBE_ALPHAS) if probe else tuple(t.key for t in self.trials),
            backbone=inputs.backbone_params(), init_hash=inputs.backbone_hash if probe else inputs.init_hash,
            order_hash=inputs.order_hash,
            image_policies={name: policy.describe() for name, policy in zip(data.names, data.policies)},
            sizes=Sizes(len(data.train_idx), len(data.val_idx), len(data.test_idx)),
            inputs=input_refs(data, self.cell, ("train", "val") if role == ROLE_TRIAL else ("train", "val", "test")),
            **fields)

    def _score(self, writer: RunWriter, record: RunRecord, pred_u: np.ndarray) -> dict[str, float]:
        """Test metrics and predictions of a run; a diverged model (non-finite predictions) fails the run."""
        if not np.isfinite(pred_u).all():
            writer.fail(f"{DIVERGED} {int((~np.isfinite(pred_u)).sum())} non-finite test predictions")
            writer.write(record)
            return {}
        test, data = self.data.test_idx, self.data
        mos, pred = data.mos[test], data.label_map.to_mos(pred_u)
        metrics = compute_metrics(mos, pred, data.label_map.error_range)
        writer.write(replace(record, test=metrics))
        columns = PREDICTION_COLUMNS
        predictions = {columns.image: data.rows.column("image")[test], columns.mos: mos, columns.pred: pred,
                       columns.ref: data.rows.column("ref")[test]}
        writer.text(pd.DataFrame(predictions).to_csv(index=False), PREDICTIONS_ARTIFACT)
        writer.text(self.grid.to_yaml(), CONFIG_ARTIFACT)
        return metrics

    def _unclaimed(self, label: str, outcome: Outcome) -> HeadResult | None:
        """None for a unit already FINISHED (nothing to report), a busy result for one held elsewhere."""
        if outcome.state is State.DONE:
            log.info("%s %s: already FINISHED, skipped", self.cell.key, label)
            return None
        log.info("%s %s: held by %s, offered again later", self.cell.key, label, outcome.owner or "another process")
        return HeadResult(label, {}, busy=True)

    # ---- the probe --------------------------------------------------------------------------------

    def _probe(self) -> HeadResult | None:
        record = self.record(PROBE_SPEC, ROLE_REFERENCE)
        claimed = claim(self.book, record)
        if not isinstance(claimed, Claim):
            return self._unclaimed(PROBE_HEAD, claimed)
        try:
            with RunWriter(claimed) as writer:
                start = time.perf_counter()
                data, source = self.data, self.inputs.features
                probe = fit_probe(source.features.cpu().numpy(), data.targets.numpy(), data.train_idx, data.val_idx,
                                  data.rank_truth[data.val_idx])
                record = replace(record, tuned={"alpha": probe.alpha},
                                 fit=FitSummary(-1, probe.val_srcc, time.perf_counter() - start))
                metrics = self._score(writer, record, probe.predictions[data.test_idx])
        except Exception as exc:  # noqa: BLE001 - recorded on the run; the grid goes on
            return HeadResult(PROBE_HEAD, {}, f"{type(exc).__name__}: {exc}")
        return HeadResult(PROBE_HEAD, metrics)

    # ---- the heads --------------------------------------------------------------------------------

    def _claim_head(self, head_spec: HeadSpec) -> _HeadClaims | HeadResult | None:
        """Claim a head's result run and (with tuning) each of its trials; a busy trial releases them all."""
        result = claim(self.book, self.record(head_spec, ROLE_RESULT))
        if not isinstance(result, Claim):
            return self._unclaimed(head_spec.label, result)
        held = _HeadClaims(head_spec, result)
        if len(self.trials) == 1:  # without tuning the result run holds the training itself
            return held
        for trial in self.trials:
            record = self.record(head_spec, ROLE_TRIAL, trial=trial.key, tuned=trial.values,
                                 parent_run_id=result.run_id)
            outcome = claim(self.book, record)
            if isinstance(outcome, Claim):
                held.trials[trial.key] = outcome
            elif outcome.state is State.DONE:  # recorded by an interrupted attempt: adopt it
                self.client.set_tag(outcome.run_id, TAGS.parent_run_id, result.run_id)
                done = RunRecord.from_mlflow(self.client.get_run(outcome.run_id))
                held.recorded[trial.key] = done.fit.best_val_srcc if done.fit else float("nan")
            else:
                log.warning("%s %s: trial %s is held by %s; offered again later", self.cell.key, head_spec.label,
                            trial.key, outcome.owner or "another process")
                for taken in [*held.trials.values(), result]:
                    taken.release()
                return HeadResult(head_spec.label, {}, busy=True)
        return held

    def _train(self, held: list[_HeadClaims]) -> dict[str, list[TrainedTrial] | Exception]:
        """Every claimed trial of every held head: frozen heads trained together, fine-tuned heads one after the
        other (so one head's failure costs no other head its training). A head whose claims another process
        took over (checked after every epoch) stops there and the others train on without it; a head whose
        training raises is retried alone, so one failing head never fails the others."""
        jobs = {head_claims.head_spec.label: [TrialJob(head_claims.head_spec, t) for t in self.trials
                                  if t.key in head_claims.trials or len(self.trials) == 1] for head_claims in held}
        if not self.inputs.frozen or len(held) == 1:
            return {h.head_spec.label: self._train_alone(h, jobs[h.head_spec.label]) for h in held}
        try:
            trained = train_trials(self.inputs, [job for head_jobs in jobs.values() for job in head_jobs],
                                   _claims_check(held))
            return {label: [t for t in trained if t.job.head_spec.label == label] for label in jobs}
        except ClaimLost as lost:
            taken = [head_claims for head_claims in held if _lost(head_claims)]
            rest = [head_claims for head_claims in held if not _lost(head_claims)]
            return {**{h.head_spec.label: lost for h in taken}, **(self._train(rest) if rest else {})}
        except Exception:  # noqa: BLE001 - find the head that raises
            return {h.head_spec.label: self._train_alone(h, jobs[h.head_spec.label]) for h in held}

    def _train_alone(self, head_claims: _HeadClaims, jobs: list[TrialJob]) -> list[TrainedTrial] | Exception:
        """One head's trials, or the exception that stopped them (recorded on its runs by :meth:`_finish_head`)."""
        try:
            return train_trials(self.inputs, jobs, _claims_check([head_claims]))
        except Exception as exc:  # noqa: BLE001 - recorded on the head's runs
            return exc

    def _finish_head(self, head_claims: _HeadClaims, trained: list[TrainedTrial] | Exception) -> HeadResult:
        head_spec = head_claims.head_spec
        try:
            if isinstance(trained, Exception):
                raise trained
            for one in trained:
                if one.job.trial.key in head_claims.trials:
                    self._write_trial(head_claims, one)
            with RunWriter(head_claims.result) as writer:
                outcome = conclude(self.inputs, head_spec, self.trials, trained, head_claims.recorded,
                                   _claims_check([head_claims]))
                metrics = self._write_result(writer, outcome)
            return HeadResult(head_spec.label, metrics, "" if metrics else "diverged")
        except ClaimLost:  # another process took the head over and redoes it: leave its runs to it
            log.warning("%s %s: taken over by another process (this process was presumed dead); its runs are "
                        "left to it", self.cell.key, head_spec.label)
            for claimed in (c for c in head_claims.claims if c.status is None):
                if claimed.lost:
                    claimed.abandon()
                else:
                    claimed.release()
            return HeadResult(head_spec.label, {}, busy=True)
        except Exception as exc:  # noqa: BLE001 - recorded on the runs (FAILED, traceback); the grid goes on
            log.error("%s %s failed: %s: %s", self.cell.key, head_spec.label, type(exc).__name__, exc)
            for still_open in (c for c in head_claims.claims if c.status is None):
                RunWriter(still_open).end_with(exc)
            return HeadResult(head_spec.label, {}, f"{type(exc).__name__}: {exc}")

    def _write_trial(self, head_claims: _HeadClaims, trained: TrainedTrial) -> None:
        trial = trained.job.trial
        record = self.record(head_claims.head_spec, ROLE_TRIAL, trial=trial.key, tuned=trial.values,
                             parent_run_id=head_claims.result.run_id, fit=trained.fit.summary(),
                             curves=trained.fit.curves)
        with RunWriter(head_claims.trials[trial.key]) as writer:
            writer.write(record)

    def _write_result(self, writer: RunWriter, outcome: HeadOutcome) -> dict[str, float]:
        fit = outcome.fit
        record = self.record(outcome.head_spec, ROLE_RESULT, trial=outcome.selected.key, tuned=outcome.selected.values,
                             trial_scores=outcome.val_srcc if len(self.trials) > 1 else {},
                             fit=replace(fit.summary(), train_seconds=outcome.train_seconds,
                                             score_seconds=outcome.score_seconds), curves=fit.curves)
        metrics = self._score(writer, record, outcome.test_u)
        if metrics and self.grid.save_weights:
            writer.file(self.inputs.bundle(outcome.head_spec, outcome.model).to_bytes(), WEIGHTS_ARTIFACT)
        return metrics


__all__ = ["CellRun", "HeadResult", "PROBE_SPEC"]
