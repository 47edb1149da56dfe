"""The training loops: seeded order, early stopping on val SRCC, best-epoch restore.

A regime supplies a *batch source* that turns sample indices into model inputs (cached features in
``frozen``, image patches in ``finetune``); everything else — optimiser, schedule, AMP, the non-finite-loss
guard, model selection — is the same code for every head, so a pair differs only in its head.

* :func:`fit` trains one model (any regime: a fine-tuned backbone and its head);
* :func:`fit_frozen` trains many frozen-regime models (an MLP trunk and a head each: every head and tuning
  trial of a cell) on the same batches at once. Their trunks' first layers run as one matrix product
  (:func:`benchmark.run.regimes.stacked_trunk_forward`), each head on its own slice, each model with its own
  learning rate and weight decay, its own early stopping and best epoch; the dropout mask is shared, as it
  is when the models are trained one after another from the cell's dropout seed. So the result is the one
  :func:`fit` gives each model alone (to float rounding, tested), at a fraction of the per-step overhead
  that dominates these small models on a CPU (``scripts/bench_frozen.py``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from benchmark.config import TUNABLE, TrainSettings
from benchmark.factory import predict_scores
from benchmark.run.regimes import FeatureSource, stacked_trunk_forward
from benchmark.schema import CURVES, EPOCH_TIMES, INPUT_WAIT_S, TRAIN_LOSS, TRAIN_S, VAL_S, VAL_SRCC, FitSummary

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """Turns sample indices (rows of the dataset's label table) into model inputs on the device.

    Both methods return ``(inputs, per_image)``: ``per_image`` consecutive inputs (patches) per row.
    """

    def train_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """Inputs for a training batch (augmented where the regime augments)."""

    def eval_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """Deterministic inputs for evaluation (their predictions are averaged per row)."""

    def eval_patches(self, indices: np.ndarray) -> int:
        """``per_image`` of :meth:`eval_inputs` for these rows."""

    def prefetch(self, indices: np.ndarray, train: bool = True) -> None:
        """Announce the next call's rows, so their inputs can be prepared while the current step runs."""


EpochCheck = Callable[[], None]
"""Called after every epoch; raises to stop training (e.g. :meth:`benchmark.run.claims.Claim.check` when
another process took the run over)."""


@dataclass
class TrialFit:
    """What training one model returns: the selected weights and the curves that led there."""

    best_state: dict
    best_epoch: int
    best_val_srcc: float
    curves: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in (*CURVES, *EPOCH_TIMES)})
    nonfinite_batches: int = 0
    seconds: float = 0.0

    def summary(self) -> FitSummary:
        """The scalar outcome, as runs record it."""
        return FitSummary(self.best_epoch, self.best_val_srcc, self.seconds, self.nonfinite_batches)


class _EarlyStopping:
    """One model's selection: the epoch with the best val SRCC, and when to stop (``patience`` stale epochs)."""

    def __init__(self, model: nn.Module, patience: int) -> None:
        self.model, self.patience, self.stale = model, patience, 0
        self.fit = TrialFit(copy.deepcopy(model.state_dict()), -1, -math.inf)

    def epoch(self, epoch: int, train_loss: float, val_srcc: float, times: dict[str, float]) -> bool:
        """Record an epoch (its loss, val SRCC and :data:`~benchmark.schema.EPOCH_TIMES`); return True when
        training should stop."""
        for name, value in {TRAIN_LOSS: train_loss, VAL_SRCC: val_srcc, **times}.items():
            self.fit.curves[name].append(value)
        if val_srcc > self.fit.best_val_srcc:
            self.fit.best_state, self.fit.best_epoch = copy.deepcopy(self.model.state_dict()), epoch
            self.fit.best_val_srcc, self.stale = val_srcc, 0
            return False
        self.stale += 1
        return self.stale >= self.patience

    def finish(self, seconds: float) -> TrialFit:
        """Restore the best epoch's weights into the model and return the fit."""
        self.model.load_state_dict(self.fit.best_state)
        self.fit.seconds = seconds
        if self.fit.nonfinite_batches:
            log.warning("%d batches had a non-finite loss and were skipped", self.fit.nonfinite_batches)
        return self.fit


def _param_groups(model: nn.Module, head: nn.Module, s: TrainSettings) -> list[dict]:
    """The optimiser groups of one model: its body at ``lr``, its head at ``lr * head_lr_multiplier``."""
    head_ids = {id(p) for p in head.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad], "lr": s.lr},
        {"params": list(head.parameters()), "lr": s.lr * s.head_lr_multiplier},
    ]
    return [{**g, "weight_decay": s.weight_decay} for g in groups if g["params"]]


def _optimizer(groups: list[dict], s: TrainSettings) -> torch.optim.Optimizer:
    """The grid's optimiser over the given groups; Adam(W) use PyTorch's fused kernels (~15 % faster on the
    CPU default grid)."""
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, fused=True)
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, fused=True)
    return torch.optim.SGD(groups, momentum=0.9)


def _schedule(optimizer: torch.optim.Optimizer, s: TrainSettings, steps_per_epoch: int):
    warmup = s.warmup_epochs * steps_per_epoch
    total = max(1, s.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if s.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast(
        "cpu", enabled=False)


@torch.inference_mode()
def predict_u(model: nn.Module, head: nn.Module, source: BatchSource, indices: np.ndarray,
              batch_size: int, device: str) -> np.ndarray:
    """Continuous predictions on the ``u`` scale for the given rows: each row's score is the mean of its
    patches' predictions. ``batch_size`` counts inputs (patches) per forward pass."""
    model.eval()
    if not len(indices):
        return np.empty(0, dtype=np.float32)
    step = max(1, batch_size // source.eval_patches(indices[:1]))
    batches = [indices[start:start + step] for start in range(0, len(indices), step)]
    preds = []
    for k, batch in enumerate(batches):
        inputs, per_image = source.eval_inputs(batch)
        if k + 1 < len(batches):
            source.prefetch(batches[k + 1], train=False)
        preds.append(predict_scores(model, head, inputs, per_image, _autocast(device)).cpu())
    return torch.cat(preds).numpy()


def srcc(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Spearman correlation for model selection; -1 for a constant or undefined prediction (never selected)."""
    value = spearmanr(prediction, truth).statistic if np.ptp(prediction) > 0 else float("nan")
    return float(value) if np.isfinite(value) else -1.0


def fit(model: nn.Module, head: nn.Module, source: BatchSource, targets: torch.Tensor,
        train_idx: np.ndarray, val_idx: np.ndarray, orders: list[np.ndarray], s: TrainSettings,
        device: str = "cpu", progress=None, val_truth: np.ndarray | None = None,
        check: EpochCheck | None = None) -> TrialFit:
    """Train ``model`` (whose output goes to ``head``) and keep the epoch with the best val SRCC.

    Parameters
    ----------
    model, head : the module mapping inputs to head outputs, and its head (``head.loss``/``predict``).
    source : turns row indices into inputs.
    targets : normalised targets ``u`` for every row of the dataset (CPU tensor).
    train_idx, val_idx : rows of the training and validation parts.
    orders : per-epoch permutations of ``range(len(train_idx))`` (:func:`~benchmark.data.cell_data.epoch_orders`).
    s : optimisation settings.
    device : where the model and inputs live (``cuda`` enables bf16 autocast).
    progress : optional tqdm bar advanced once per epoch.
    val_truth : ground truth ranked against on val (default: the targets; pass unclipped scores when the
        targets are clipped, so clipping adds no ties).
    check : called after every epoch; raises to stop training.

    The next batch is announced to ``source.prefetch`` before each step, so its patches are copied while
    the step runs (the patches, and so the result, are the same without it).
    """
    start = time.perf_counter()
    optimizer = _optimizer(_param_groups(model, head, s), s)
    scheduler = _schedule(optimizer, s, math.ceil(len(train_idx) / s.batch_size))
    val_u = targets[val_idx].numpy() if val_truth is None else np.asarray(val_truth)
    stopping = _EarlyStopping(model, s.patience)
    for epoch in range(s.epochs):
        model.train()
        losses = []
        rows = train_idx[orders[epoch]]
        batches = [rows[begin:begin + s.batch_size] for begin in range(0, len(rows), s.batch_size)]
        began, waited = time.perf_counter(), 0.0
        for k, batch in enumerate(batches):
            asked = time.perf_counter()
            inputs, per_image = source.train_inputs(batch)
            waited += time.perf_counter() - asked
            if k + 1 < len(batches):
                source.prefetch(batches[k + 1])
            u = targets[batch].repeat_interleave(per_image).to(device, non_blocking=True)
            with _autocast(device):
                loss = head.loss(model(inputs), u)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                stopping.fit.nonfinite_batches += 1
            else:
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            scheduler.step()
        validating = time.perf_counter()
        val_srcc = srcc(predict_u(model, head, source, val_idx, s.batch_size * 2, device), val_u)
        times = {TRAIN_S: validating - began, VAL_S: time.perf_counter() - validating, INPUT_WAIT_S: waited}
        if progress is not None:
            progress.update(1)
        if check is not None:
            check()
        if stopping.epoch(epoch, float(np.mean(losses)) if losses else float("nan"), val_srcc, times):
            break
    return stopping.finish(time.perf_counter() - start)


def shared_schedule(settings: Sequence[TrainSettings]) -> TrainSettings:
    """The settings of models trained together: they may differ only in the tuned settings (``TUNABLE``).

    Raises
    ------
    ValueError
        When two models differ in another setting (epochs, batch size, schedule, ...).
    """
    first = settings[0]
    for other in settings[1:]:
        differ = [f.name for f in fields(first) if f.name not in TUNABLE
                  and getattr(first, f.name) != getattr(other, f.name)]
        if differ:
            raise ValueError(f"models trained together may differ only in {', '.join(TUNABLE)}; these differ: "
                             f"{', '.join(differ)}")
    return first


def fit_frozen(models: Sequence[nn.Sequential], source: FeatureSource, targets: torch.Tensor,
               train_idx: np.ndarray, val_idx: np.ndarray, orders: list[np.ndarray],
               settings: Sequence[TrainSettings], val_truth: np.ndarray, progress=None,
               check: EpochCheck | None = None) -> list[TrialFit]:
    """Train frozen-regime models ``(trunk, head)`` on the same batches at once; one :class:`TrialFit` each.

    Every model follows :func:`fit`'s recipe with its own settings (which may differ only in learning rate
    and weight decay): its own optimiser groups, early stopping and best epoch; a batch whose loss is
    non-finite for one model is skipped for that model only. A model that stopped early leaves the batch.
    Call it with the global generator seeded from the cell's dropout seed, as :func:`fit` is called.
    """
    start = time.perf_counter()
    s = shared_schedule(settings)
    trunks, heads = [m[0] for m in models], [m[1] for m in models]
    groups = [_param_groups(model, head, setting) for model, head, setting in zip(models, heads, settings, strict=True)]
    optimizer = _optimizer([g for model_groups in groups for g in model_groups], s)
    scheduler = _schedule(optimizer, s, math.ceil(len(train_idx) / s.batch_size))
    stopping = [_EarlyStopping(model, s.patience) for model in models]
    epochs_run = [0] * len(models)
    active = list(range(len(models)))
    val_inputs, _ = source.eval_inputs(val_idx)
    for epoch in range(s.epochs):
        began = time.perf_counter()
        for index in active:
            models[index].train()
        losses = torch.zeros(len(active))
        counted = torch.zeros(len(active))
        rows = train_idx[orders[epoch]]
        for begin in range(0, len(rows), s.batch_size):
            batch = rows[begin:begin + s.batch_size]
            inputs, _ = source.train_inputs(batch)
            u = targets[batch].to(inputs.device, non_blocking=True)
            hidden = stacked_trunk_forward([trunks[i] for i in active], inputs)
            batch_losses = torch.stack([heads[i].loss(heads[i](h), u) for i, h in zip(active, hidden)])
            finite = torch.isfinite(batch_losses)
            optimizer.zero_grad(set_to_none=True)
            if finite.any():
                batch_losses[finite].sum().backward()
            for position in torch.nonzero(~finite).flatten().tolist():  # skip this batch for that model only
                stopping[active[position]].fit.nonfinite_batches += 1
                for parameter in models[active[position]].parameters():
                    parameter.grad = None
            optimizer.step()
            scheduler.step()
            losses += torch.where(finite, batch_losses.detach(), 0.0)
            counted += finite
        validating = time.perf_counter()
        with torch.inference_mode():
            hidden = stacked_trunk_forward([trunks[i] for i in active], val_inputs, training=False)
            predictions = [predict_scores(heads[i], heads[i], h, 1).cpu().numpy() for i, h in zip(active, hidden)]
        mean_losses = (losses / counted).tolist()
        times = {TRAIN_S: validating - began, VAL_S: time.perf_counter() - validating, INPUT_WAIT_S: 0.0}
        still = []
        for position, index in enumerate(active):
            epochs_run[index] += 1
            train_loss = mean_losses[position] if counted[position] else float("nan")
            if not stopping[index].epoch(epoch, train_loss, srcc(predictions[position], val_truth), times):
                still.append(index)
        active = still
        if progress is not None:
            progress.update(1)
        if check is not None:
            check()
        if not active:
            break
    seconds = time.perf_counter() - start
    total_epochs = max(1, sum(epochs_run))
    return [stop.finish(seconds * run / total_epochs) for stop, run in zip(stopping, epochs_run, strict=True)]


__all__ = ["BatchSource", "EpochCheck", "TrialFit", "fit", "fit_frozen", "predict_u",
           "shared_schedule", "srcc"]
