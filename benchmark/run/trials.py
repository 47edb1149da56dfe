"""Tuning trials: the same list of training settings for every head of a cell, chosen on val only.

A grid's ``tuning: {lr: [3.0e-4, 1.0e-3, 3.0e-3]}`` expands into one :class:`Trial` per combination of
the listed values (in the listed order); every head of a cell trains once per trial with the cell's
shared init, order and crops, and the trial with the best validation SRCC is the head's result. The
test split is scored only for that selected trial, after the selection. Equal budgets are the point:
a head must never win or lose because it was tuned more or less than another.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from benchmark.config import TrainSettings


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
    if not tuning:
        return [Trial("base", {}, base)]
    names = [name for name, _ in tuning]
    trials = []
    for combination in itertools.product(*(values for _, values in tuning)):
        values = dict(zip(names, (float(v) for v in combination), strict=True))
        key = ",".join(f"{name}={value:g}" for name, value in values.items())
        trials.append(Trial(key, values, replace(base, **values)))
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


__all__ = ["Trial", "select_trial", "trial_list"]
