"""One cell of a grid: every head trained as a matched pair, tuned alike, beside a linear-probe reference.

Data flow of a cell: :func:`benchmark.cell_data.load_cell_data` (labels, split, label map, order) →
regime inputs (cached features or decoded images) → per head, one :func:`benchmark.training.fit` per
tuning trial (:mod:`benchmark.trials`; trial runs are children of the head's result run) → the trial
with the best val SRCC is scored once on the test split → the head's ``result`` run. Per cell, the
ridge probe (:mod:`benchmark.probe`) is recorded as a ``reference`` run.

A head that raises ends its run FAILED (message tag, traceback artifact) and the cell goes on with the
other heads; :attr:`HeadResult.error` tells the caller.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from torch import nn
from tqdm.auto import tqdm

from benchmark.cell_data import CellData, load_cell_data
from benchmark.config import Cell, GridConfig, HeadSpec
from benchmark.features import Preprocessing, cached_features
from benchmark.heads import get_head, head_hparams
from benchmark.metrics import compute_metrics
from benchmark.models import IQAModel, create_backbone, weights_fingerprint
from benchmark.probe import PROBE_ALPHAS, fit_probe
from benchmark.provenance import git_sha
from benchmark.regimes import FeatureSource, ImageSource, frozen_model, frozen_trunk
from benchmark.schema import (
    CONFIG_ARTIFACT,
    HEAD_INIT_PARAM,
    PARENT_TAG,
    PROBE_HEAD,
    ROLE_REFERENCE,
    ROLE_RESULT,
    ROLE_TRIAL,
    TRIAL_TAG,
    WEIGHTS_ARTIFACTS,
    metric_key,
)
from benchmark.tracking import RunRecorder, finished_run
from benchmark.training import FitResult, fit, order_hash, predict_u
from benchmark.trials import Trial, select_trial, trial_list

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadResult:
    """Summary of one (cell, head) run; ``metrics`` is empty when the run failed (``error`` says why)."""

    head: str
    metrics: dict[str, float]
    best_epoch: int
    seconds: float
    error: str = ""


@dataclass
class TrialOutcome:
    """A trained (or, on resume, a recorded) trial: its val score and, when trained here, its fit (curves,
    and the best epoch's weights while it leads the selection)."""

    trial: Trial
    fit: FitResult | None
    val_srcc: float
    run_id: str = ""


def seeded_backbone(name: str, pretrained: bool | str, seed: int) -> nn.Module:
    """A backbone whose random initialisation (if any) is seeded, never left to chance."""
    torch.manual_seed(seed)
    return create_backbone(name, pretrained)


@functools.lru_cache(maxsize=2)
def _frozen_backbone(name: str, pretrained: bool | str, seed: int) -> tuple[nn.Module, str]:
    backbone = seeded_backbone(name, pretrained, seed).eval()
    return backbone, weights_fingerprint(backbone)


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class CellRunner:
    """Trains every head of one cell (each over the same tuning trials) and records the runs."""

    def __init__(self, grid: GridConfig, cell: Cell, client: MlflowClient, experiment_id: str,
                 data_root: str | None = None, device: str | None = None):
        self.grid, self.cell, self.client, self.experiment_id = grid, cell, client, experiment_id
        self.device = device or default_device()
        self.data: CellData = load_cell_data(grid, cell, data_root)
        self.seeds = cell.seeds
        self.trials = trial_list(grid.training, grid.tuning)
        self.spec = grid.backbone(cell.backbone)
        if grid.regime == "frozen":  # never trained: one instance per process serves every cell
            self.backbone, self.backbone_hash = _frozen_backbone(self.spec.name, self.spec.pretrained,
                                                                 self.seeds.backbone)
        else:
            self.backbone = seeded_backbone(self.spec.name, self.spec.pretrained, self.seeds.backbone)
            self.backbone_hash = weights_fingerprint(self.backbone)
        self.prep = Preprocessing.for_backbone(self.backbone, grid.image_size)
        self._initial_state = copy.deepcopy(self.backbone.state_dict()) if grid.regime == "finetune" else None

    @functools.cached_property
    def features(self) -> FeatureSource:
        """Standardised features of the initial backbone (the frozen regime's inputs, the probe's always).

        They come from the process's frozen copy of the initial backbone (same seed and weights, same
        hash), never from the backbone a fine-tuning cell trains.
        """
        extractor, _ = _frozen_backbone(self.spec.name, self.spec.pretrained, self.seeds.backbone)
        arrays = [cached_features(extractor, self.spec.name, self.backbone_hash, name, table, policy, self.prep,
                                  self.device)
                  for name, table, policy in zip(self.data.names, self.data.rows.tables, self.data.policies)]
        return FeatureSource(arrays, self.data.train_idx, self.device)

    def run(self, todo: set[str] | None = None) -> list[HeadResult]:
        """Run the probe and the heads named in ``todo`` (default: all) that have no FINISHED run yet.

        ``probe`` in ``todo`` names the reference run. The store is asked again right before each
        run, so a requeued or concurrently rerun cell never adds a second FINISHED run.
        """
        todo = {PROBE_HEAD, *(h.label for h in self.grid.heads)} if todo is None else todo
        results = []
        if PROBE_HEAD in todo and not self._finished(ROLE_REFERENCE, PROBE_HEAD):
            results.append(self._run_probe())
        for spec in self.grid.heads:
            if spec.label in todo and not self._finished(ROLE_RESULT, spec.label):
                results.append(self._run_head(spec))
        return results

    def prepare(self) -> None:
        """Build the cell's cached inputs (frozen features) without training anything."""
        if self.grid.regime == "frozen":
            _ = self.features

    def _finished(self, role: str, head: str, trial: str = ""):
        run = finished_run(self.client, self.experiment_id, (role, self.cell.key, head, trial))
        if run is not None and role != ROLE_TRIAL:
            log.info("%s %s: already FINISHED, skipped", self.cell.key, head)
        return run

    # ---- runs -------------------------------------------------------------------------------------

    def _tags(self, label: str, head_type: str, role: str, init_hash: str, config_hash: str) -> dict[str, str]:
        c = self.cell
        return {
            "grid": self.grid.name, "cell_key": c.key, "pair_key": c.pair_key, "backbone": c.backbone,
            "dataset": c.dataset, "test_dataset": c.test_dataset, "head": label, "head_type": head_type,
            "regime": c.regime, "split": str(c.split), "seed": str(c.seed), "git_sha": git_sha(),
            "init_hash": init_hash, "order_hash": order_hash(self.data.orders), "config_hash": config_hash,
            "role": role,
        }

    def _params(self, training: bool = True) -> dict[str, object]:
        """Params every run of the cell shares (without the optimisation settings for the closed-form probe)."""
        settings = self.grid.hyperparameters() if training else {
            k: v for k, v in self.grid.hyperparameters().items() if k in ("regime", "label_norm", "split_fractions",
                                                                           "image_size")}
        return {
            **settings, "rope": self.grid.rope, "backbone.pretrained": self.spec.pretrained,
            "backbone.weights": self.backbone_hash, "preprocessing": asdict(self.prep), "device": self.device,
            **{f"image_policy.{name}": policy.describe() for name, policy in zip(self.data.names, self.data.policies)},
            "n_train": len(self.data.train_idx), "n_val": len(self.data.val_idx), "n_test": len(self.data.test_idx),
        }

    def _head_params(self, spec: HeadSpec) -> dict[str, object]:
        """Params of a head's runs; the tuned settings are left out here (each trial, and the result once it
        has selected one, logs its own values)."""
        params = {**self._params(), **{f"head.{k}": v for k, v in {**head_hparams(spec.type), **spec.hparams}.items()},
                  HEAD_INIT_PARAM: spec.init, "tuning": [t.key for t in self.trials]}
        return {k: v for k, v in params.items() if k not in self.trials[0].values}

    def _score_test(self, run: RunRecorder, pred_u: np.ndarray) -> dict[str, float] | None:
        """Test metrics and predictions of a run; a diverged model (non-finite predictions) fails the run."""
        if not np.isfinite(pred_u).all():
            run.fail(f"{int((~np.isfinite(pred_u)).sum())} non-finite test predictions (diverged model)")
            return None
        test = self.data.test_idx
        mos, pred = self.data.mos[test], self.data.label_map.to_mos(pred_u)
        metrics = compute_metrics(mos, pred, self.data.label_map.error_range)
        run.log_metrics({metric_key(k): v for k, v in metrics.items()})
        run.log_predictions(pd.DataFrame({"image": self.data.rows.column("image")[test], "mos": mos, "pred": pred}))
        run.log_text(self.grid.to_yaml(), CONFIG_ARTIFACT)
        return metrics

    # ---- the probe --------------------------------------------------------------------------------

    def _run_probe(self) -> HeadResult:
        source = self.features
        config_hash = self.grid.run_config_hash(self.cell, HeadSpec(PROBE_HEAD, PROBE_HEAD))
        tags = self._tags(PROBE_HEAD, PROBE_HEAD, ROLE_REFERENCE, self.backbone_hash, config_hash)
        params = {**self._params(training=False), "probe.alphas": list(PROBE_ALPHAS)}
        try:
            with RunRecorder(self.client, self.experiment_id, tags, params) as run:
                probe = fit_probe(source.features.cpu().numpy(), self.data.targets.numpy(), self.data.train_idx,
                                  self.data.val_idx, self.data.rank_truth[self.data.val_idx])
                run.log_params({"probe.alpha": probe.alpha})
                run.log_metrics({"best_val_srcc": probe.val_srcc})
                metrics = self._score_test(run, probe.predictions[self.data.test_idx]) or {}
        except Exception as exc:  # noqa: BLE001 - recorded on the run; the grid goes on
            return HeadResult(PROBE_HEAD, {}, -1, 0.0, f"{type(exc).__name__}: {exc}")
        return HeadResult(PROBE_HEAD, metrics, -1, 0.0)

    # ---- a head -----------------------------------------------------------------------------------

    def _build(self, spec: HeadSpec) -> tuple[nn.Module, nn.Module]:
        """The model a trial of ``spec`` starts from: shared init (backbone / trunk), the head's own seed,
        its output layer at the training prior unless ``init: default``."""
        if self.grid.regime == "frozen":
            torch.manual_seed(self.seeds.trunk)
            trunk = frozen_trunk(self.features.num_features, self.grid.hidden, self.grid.dropout)
            in_features = self.grid.hidden
        else:
            self.backbone.load_state_dict(self._initial_state)
            in_features = self.backbone.num_features
        torch.manual_seed(self.seeds.head(spec.label))
        head = get_head(spec.type, in_features, **spec.hparams)
        if spec.init == "prior":
            head.init_prior(self.data.targets[self.data.train_idx])
        model = frozen_model(trunk, head) if self.grid.regime == "frozen" else IQAModel(self.backbone, head)
        model = model.to(self.device)
        if self.device.startswith("cuda") and self.grid.regime == "finetune":
            model = model.to(memory_format=torch.channels_last)
        return model, head

    def _source(self):
        if self.grid.regime == "frozen":
            return self.features
        return ImageSource(self.data.rows, self.data.policies, self.prep, self.seeds.augment, self.device)

    def _init_hash(self, model: nn.Module) -> str:
        """Hash of the weights a pair shares at initialisation, taken from the model about to train:
        the backbone (as restored for this head) and, when frozen, the MLP trunk."""
        shared = self.backbone_hash if self.grid.regime == "frozen" else weights_fingerprint(self.backbone)
        if self.grid.regime == "frozen":
            shared += weights_fingerprint(model[0])
        return hashlib.sha256(shared.encode()).hexdigest()[:16]

    def _train(self, spec: HeadSpec, trial: Trial) -> FitResult:
        """Train one trial from the cell's shared init; the result holds the best epoch's weights."""
        model, head = self._build(spec)
        source = self._source()
        with tqdm(total=trial.settings.epochs, desc=f"{spec.label} {trial.key}", unit="epoch", leave=False) as bar:
            torch.manual_seed(self.seeds.train)  # dropout etc.: one stream per cell, the same for every trial
            result = fit(model, head, source, self.data.targets, self.data.train_idx, self.data.val_idx,
                         self.data.orders, trial.settings, self.device, bar,
                         val_truth=self.data.rank_truth[self.data.val_idx])
        return result

    def _run_head(self, spec: HeadSpec) -> HeadResult:
        config_hash = self.grid.run_config_hash(self.cell, spec)
        model, _ = self._build(spec)
        tags = self._tags(spec.label, spec.type, ROLE_RESULT, self._init_hash(model), config_hash)
        try:
            with RunRecorder(self.client, self.experiment_id, tags, self._head_params(spec)) as run:
                return self._tune_and_score(spec, run, tags)
        except Exception as exc:  # noqa: BLE001 - recorded on the run (FAILED, traceback); the grid goes on
            log.error("%s %s failed: %s: %s", self.cell.key, spec.label, type(exc).__name__, exc)
            return HeadResult(spec.label, {}, -1, 0.0, f"{type(exc).__name__}: {exc}")

    def _tune_and_score(self, spec: HeadSpec, run: RunRecorder, tags: dict[str, str]) -> HeadResult:
        """Every trial (reusing FINISHED trial runs of an interrupted attempt), selection on val, one test score."""
        outcomes: list[TrialOutcome] = []
        for trial in self.trials:
            outcomes.append(self._trial(spec, trial, run.run_id, tags))
            leader = select_trial([o.val_srcc for o in outcomes])
            for index, outcome in enumerate(outcomes):  # keep the weights of the current leader only
                if index != leader and outcome.fit is not None:
                    outcome.fit.best_state = {}
        chosen = outcomes[select_trial([o.val_srcc for o in outcomes])]
        if chosen.fit is None:  # selected a trial recorded by an interrupted attempt: retrain it, unlogged
            chosen.fit = self._train(spec, chosen.trial)
        fit_result = chosen.fit
        run.set_tags({TRIAL_TAG: chosen.trial.key})
        run.log_params(chosen.trial.values)
        run.log_curves(fit_result.curves)
        run.log_metrics({"best_epoch": fit_result.best_epoch, "best_val_srcc": fit_result.best_val_srcc,
                         "train_seconds": sum(o.fit.seconds for o in outcomes if o.fit is not None),
                         "nonfinite_batches": fit_result.nonfinite_batches})
        model, head = self._build(spec)
        model.load_state_dict(fit_result.best_state)
        # the test split is read here for the first time, for the selected trial only
        pred_u = predict_u(model, head, self._source(), self.data.test_idx, self.grid.training.batch_size * 2,
                           self.device)
        metrics = self._score_test(run, pred_u)
        if metrics is None:
            return HeadResult(spec.label, {}, fit_result.best_epoch, fit_result.seconds, "diverged")
        if self.grid.save_weights:
            run.log_state(self._weights(spec, model), WEIGHTS_ARTIFACTS[self.grid.regime])
        return HeadResult(spec.label, metrics, fit_result.best_epoch, fit_result.seconds)

    def _trial(self, spec: HeadSpec, trial: Trial, parent_id: str, tags: dict[str, str]) -> TrialOutcome:
        """One trial: its FINISHED run from an earlier attempt (adopted by this result run), or trained now.

        Without tuning (one trial) the result run holds the training itself: no child run.
        """
        if len(self.trials) > 1:
            done = self._finished(ROLE_TRIAL, spec.label, trial.key)
            if done is not None:
                self.client.set_tag(done.info.run_id, PARENT_TAG, parent_id)
                return TrialOutcome(trial, None, float(done.data.metrics.get("best_val_srcc", float("nan"))),
                                    done.info.run_id)
        result = self._train(spec, trial)
        outcome = TrialOutcome(trial, result, result.best_val_srcc)
        if len(self.trials) > 1:
            trial_tags = {**tags, "role": ROLE_TRIAL, TRIAL_TAG: trial.key}
            params = {**self._head_params(spec), **trial.values}
            with RunRecorder(self.client, self.experiment_id, trial_tags, params, parent_run_id=parent_id) as child:
                child.log_curves(result.curves)
                child.log_metrics({"best_epoch": result.best_epoch, "best_val_srcc": result.best_val_srcc,
                                   "train_seconds": result.seconds, "nonfinite_batches": result.nonfinite_batches})
                outcome.run_id = child.run_id
        return outcome

    def _weights(self, spec: HeadSpec, model: nn.Module) -> dict:
        """What :mod:`benchmark.predict` needs to rebuild the trained model and map its output to MOS."""
        label_map = self.data.label_map
        state = {
            "regime": self.grid.regime, "backbone": self.spec.name, "pretrained": self.spec.pretrained,
            "backbone_weights": self.backbone_hash, "backbone_seed": self.seeds.backbone,
            "preprocessing": asdict(self.prep), "image_policy": self.data.policies[-1].to_mapping(),
            "head_type": spec.type, "head_hparams": dict(spec.hparams),
            "label_map": {**asdict(label_map.info), "u_low": label_map.u_low, "u_high": label_map.u_high},
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        }
        if self.grid.regime == "frozen":
            state.update(hidden=self.grid.hidden, dropout=self.grid.dropout, feature_mean=self.features.mean,
                         feature_std=self.features.std)
        return state


__all__ = ["CellRunner", "HeadResult", "default_device", "seeded_backbone"]
