"""Training a cell's heads over their tuning trials — a pure function of the cell's inputs (no MLflow).

A grid's ``tuning: {lr: [3.0e-4, 1.0e-3, 3.0e-3]}`` expands into one :class:`Trial` per combination of
the listed values (in the listed order); every head of a cell trains once per trial from the cell's
shared init, order and patches, the trial with the best validation SRCC is the head's result, and only it
is scored on the test split, once, after the selection. Equal budgets are the point: a head must never win
or lose because it was tuned more or less than another.

* :func:`train_trials` trains (head, trial) jobs: in the frozen regime all of them at once
  (:func:`benchmark.run.training.fit_frozen`), when fine-tuning one after another;
* :func:`conclude` selects a head's trial on val (among trials trained now and trials recorded by an
  interrupted attempt, which it retrains if selected) and scores the selection on the test split.

:mod:`benchmark.run.cell` records what these return; nothing here touches the store.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.config import TrainSettings
from benchmark.run.inputs import CellInputs
from benchmark.run.training import EpochCheck, TrialFit, fit, fit_frozen, predict_u
from benchmark.schema import HeadSpec, trial_key


@dataclass(frozen=True)
class Trial:
    """One combination of tuned settings.

    Attributes
    ----------
    key : str
        Readable identity, e.g. ``"lr=0.001,weight_decay=0.0001"`` (``"base"`` without tuning); the
        ``trial`` tag of trial runs.
    values : dict
        The tuned settings' values (empty without tuning).
    settings : TrainSettings
        The grid's settings with those values substituted.
    """

    key: str
    values: dict[str, float]
    settings: TrainSettings


def trial_list(base: TrainSettings, tuning: Sequence[tuple[str, Sequence[float]]]) -> list[Trial]:
    """Every combination of the tuned values, in the listed order; one ``base`` trial without tuning.

    Examples
    --------
    >>> base = TrainSettings(30, 64, 8, "adamw", 1e-3, 1e-4, "cosine", 0, 1.0)
    >>> [t.key for t in trial_list(base, [("lr", [3e-4, 1e-3]), ("weight_decay", [0.0])])]
    ['lr=0.0003,weight_decay=0', 'lr=0.001,weight_decay=0']
    >>> trial_list(base, [])[0].key
    'base'
    """
    names = [name for name, _ in tuning]
    trials = []
    for combination in itertools.product(*(values for _, values in tuning)):
        values = dict(zip(names, (float(v) for v in combination), strict=True))
        trials.append(Trial(trial_key(values), values, replace(base, **values)))
    return trials


def select_trial(val_srcc: Sequence[float]) -> int:
    """Index of the trial with the best validation SRCC; ties go to the earliest trial in the list.

    Non-finite values (a diverged trial) are never selected unless every trial diverged.

    Examples
    --------
    >>> select_trial([0.61, 0.64, 0.64])
    1
    >>> select_trial([float("nan"), 0.2])
    1
    """
    best = 0
    for index, value in enumerate(val_srcc):
        if value == value and not (val_srcc[best] >= value):  # NaN never wins; earlier wins ties
            best = index
    return best


@dataclass(frozen=True)
class TrialJob:
    """One head trained under one trial."""

    head_spec: HeadSpec
    trial: Trial


@dataclass
class TrainedTrial:
    """A job, its fit and the model it trained (holding the best epoch's weights)."""

    job: TrialJob
    fit: TrialFit
    model: nn.Module
    head_module: nn.Module


def train_trials(inputs: CellInputs, jobs: Sequence[TrialJob], check: EpochCheck | None = None) -> list[TrainedTrial]:
    """Train every job from the cell's shared init; in the frozen regime all jobs at once.

    The dropout stream is seeded from the cell before each training, so every job sees what it would see
    trained alone. When fine-tuning, only the best trained trial of each head keeps its model (a whole
    backbone each); the others keep their fit. ``check`` is called after every epoch and raises to stop.
    """
    if not jobs:
        return []
    data = inputs.data
    val_truth = data.rank_truth[data.val_idx]
    if inputs.frozen:
        built = [inputs.build(job.head_spec) for job in jobs]
        torch.manual_seed(inputs.seeds.train)
        with tqdm(total=jobs[0].trial.settings.epochs, desc=f"{len(jobs)} models", unit="epoch", leave=False) as bar:
            fits = fit_frozen([model for model, _ in built], inputs.features, data.targets, data.train_idx,
                              data.val_idx, data.orders, [job.trial.settings for job in jobs], val_truth, bar, check)
        return [TrainedTrial(job, result, *models) for job, result, models in zip(jobs, fits, built)]
    trained: list[TrainedTrial] = []
    for job in jobs:
        model, head_module = inputs.build(job.head_spec)  # restores the backbone's initial state
        torch.manual_seed(inputs.seeds.train)
        with tqdm(total=job.trial.settings.epochs, desc=f"{job.head_spec.label} {job.trial.key}", unit="epoch",
                  leave=False) as bar:
            result = fit(model, head_module, inputs.source(), data.targets, data.train_idx, data.val_idx, data.orders,
                         job.trial.settings, inputs.device, bar, val_truth=val_truth, check=check)
        rivals = [t for t in trained if t.job.head_spec == job.head_spec]
        if rivals and max(t.fit.best_val_srcc for t in rivals) >= result.best_val_srcc:
            model = head_module = None
        else:
            for rival in rivals:
                rival.model = rival.head_module = None
                rival.fit.best_state = {}
        trained.append(TrainedTrial(job, result, model, head_module))
    return trained


@dataclass
class HeadOutcome:
    """A head's selected trial, its fit and model, its test predictions (``u`` scale) and every trial's val SRCC."""

    head_spec: HeadSpec
    selected: Trial
    fit: TrialFit
    model: nn.Module
    test_u: np.ndarray
    val_srcc: dict[str, float]
    train_seconds: float
    score_seconds: float


def conclude(inputs: CellInputs, head_spec: HeadSpec, trials: Sequence[Trial], trained: Sequence[TrainedTrial],
             recorded: Mapping[str, float], check: EpochCheck | None = None) -> HeadOutcome:
    """Select ``head_spec``'s trial on val and score it once on the test split.

    Parameters
    ----------
    trained : this head's trials trained now.
    recorded : val SRCC of trials an interrupted attempt recorded (trial key -> value); one of them that
        wins the selection is retrained (its weights were not kept).
    check : passed to that retraining (:func:`train_trials`).
    """
    mine = {t.job.trial.key: t for t in trained if t.job.head_spec == head_spec}
    val = {trial.key: mine[trial.key].fit.best_val_srcc if trial.key in mine else recorded[trial.key]
           for trial in trials}
    selected = trials[select_trial([val[trial.key] for trial in trials])]
    chosen = mine.get(selected.key)
    if chosen is None or chosen.model is None:
        chosen = train_trials(inputs, [TrialJob(head_spec, selected)], check)[0]
    data = inputs.data
    # the test split is read here for the first time, for the selected trial only
    start = time.perf_counter()
    test_u = predict_u(chosen.model, chosen.head_module, inputs.source(), data.test_idx,
                       selected.settings.batch_size * 2, inputs.device)
    return HeadOutcome(head_spec, selected, chosen.fit, chosen.model, test_u, val,
                       sum(t.fit.seconds for t in mine.values()), time.perf_counter() - start)


__all__ = ["HeadOutcome", "TrainedTrial", "Trial", "TrialJob", "conclude", "select_trial", "train_trials",
           "trial_list"]
