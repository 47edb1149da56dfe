"""The run schema: every tag, param, metric and artifact name a grid's MLflow runs carry.

Written by the harness (:mod:`benchmark.run.cell`, :mod:`benchmark.run.tracking`), read back by the report
(:mod:`benchmark.analysis.report_data`) and imitated by :mod:`benchmark.analysis.synthetic_store`; all three take the names
from here, so they cannot drift apart.

Runs have a ``role``:

* ``result`` — one per (cell, head): the selected tuning trial, scored once on the test split; the
  statistics and tables use these only;
* ``trial`` — one per (cell, head, tuning trial): a child run of its result run (``mlflow.parentRunId``),
  trained and scored on val only;
* ``reference`` — one per cell: the closed-form linear probe (head label ``probe``), a yardstick for
  the trained heads, never in the tests between heads.
"""

from __future__ import annotations

from benchmark.metrics import METRIC_NAMES

ROLE_RESULT, ROLE_TRIAL, ROLE_REFERENCE = "result", "trial", "reference"
ROLES = (ROLE_RESULT, ROLE_TRIAL, ROLE_REFERENCE)
PROBE_HEAD = "probe"
"""Head label (and ``head_type``) of the linear-probe reference run."""

RUN_TAGS = (
    "grid", "cell_key", "pair_key", "backbone", "dataset", "test_dataset", "head", "head_type",
    "regime", "split", "seed", "git_sha", "init_hash", "order_hash", "config_hash", "role",
)
"""Tags of every run (trial runs add ``TRIAL_TAG``)."""
KEY_TAGS = ("role", "cell_key", "head")
"""With ``TRIAL_TAG`` for trials: what identifies one unit of work (the exactly-once key)."""
TRIAL_TAG = "trial"
"""The tuning trial's key (e.g. ``lr=0.001``) on trial runs; on result runs, the trial it selected."""
PARENT_TAG = "mlflow.parentRunId"
FAILURE_TAG = "failure"
"""Why a run ended FAILED (the exception or the divergence), set on the run itself."""
DIVERGED = "diverged:"
"""Start of the ``failure`` tag of a run whose model diverged (non-finite test predictions): a failure of
the head itself, which the report counts against it (an exception may be the machine's and is retried)."""

TEST_METRICS = METRIC_NAMES
"""Logged as ``test_<name>`` on result and reference runs (never on trials)."""
FIT_METRICS = ("best_epoch", "best_val_srcc", "train_seconds", "nonfinite_batches")
"""Scalar outcome of a training run (result runs copy the selected trial's)."""
CURVES = ("train_loss", "val_srcc")
"""Per-epoch metrics (step = epoch)."""
SIZE_PARAMS = ("n_train", "n_val", "n_test")
HEAD_INIT_PARAM = "head.init"
"""``prior`` (the head's ``init_prior`` on the training targets) or ``default`` (PyTorch's init)."""

PREDICTIONS_ARTIFACT = "predictions.csv"
"""Test predictions: columns ``image, mos, pred, ref`` (``pred`` on the MOS scale, unclamped; ``ref`` the
image's content group, which the report's bootstrap resamples)."""
CONFIG_ARTIFACT = "config.yaml"
TRACEBACK_ARTIFACT = "traceback.txt"
WEIGHTS_ARTIFACTS = {"frozen": "head.pt", "finetune": "model.pt"}


def metric_key(name: str) -> str:
    """MLflow metric name of a final test metric.

    Examples
    --------
    >>> metric_key("srcc")
    'test_srcc'
    """
    return f"test_{name}"


__all__ = ["CONFIG_ARTIFACT", "CURVES", "DIVERGED", "FAILURE_TAG", "FIT_METRICS", "HEAD_INIT_PARAM", "KEY_TAGS",
           "PARENT_TAG", "PREDICTIONS_ARTIFACT", "PROBE_HEAD", "ROLES", "ROLE_REFERENCE", "ROLE_RESULT",
           "ROLE_TRIAL", "RUN_TAGS", "SIZE_PARAMS", "TEST_METRICS", "TRACEBACK_ARTIFACT", "TRIAL_TAG",
           "WEIGHTS_ARTIFACTS", "metric_key"]
