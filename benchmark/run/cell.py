"""One cell of a grid: every head trained as a matched pair, tuned alike, beside a linear-probe reference.

Data flow of a cell: :func:`benchmark.run.cell_data.load_cell_data` (labels, split, label map, order) →
regime inputs (cached features or decoded images) → per head, one :func:`benchmark.run.training.fit` per
tuning trial (:mod:`benchmark.run.trials`; trial runs are children of the head's result run) → the trial
with the best val SRCC is scored once on the test split → the head's ``result`` run. Per cell, the
ridge probe (:mod:`benchmark.run.probe`) is recorded as a ``reference`` run.

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

from benchmark.run.cell_data import CellData, load_cell_data
from benchmark.config import Cell, GridConfig, HeadSpec
from benchmark.run.features import Preprocessing, cached_features
from benchmark.heads import get_head, head_hparams
from benchmark.metrics import compute_metrics
from benchmark.models import IQAModel, create_backbone, weights_fingerprint
from benchmark.run.probe import PROBE_ALPHAS, fit_probe
from benchmark.provenance import git_sha
from benchmark.run.regimes import FeatureSource, ImageSource, frozen_model, frozen_trunk
from benchmark.schema import (
    CONFIG_ARTIFACT,
    DIVERGED,
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
from benchmark.run.claims import Claim, ClaimBook, Outcome, State
from benchmark.run.tracking import RunRecorder
from benchmark.run.training import FitResult, fit, order_hash, predict_u
from benchmark.run.trials import Trial, select_trial, trial_list

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadResult:
    """Summary of one (cell, head) run; ``metrics`` is empty when the run failed (``error`` says why) or
    when another live process holds the (cell, head) right now (``busy``: offer it again later)."""

    head: str
    metrics: dict[str, float]
    best_epoch: int
    seconds: float
    error: str = ""
    busy: bool = False


class TrialBusy(RuntimeError):
    """A tuning trial of this head is held by another live process (an earlier holder that was expired)."""


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
                 data_root: str | None = None, device: str | None = None, claim_ttl_s: float = 300.0):
        self.grid, self.cell, self.client, self.experiment_id = grid, cell, client, experiment_id
        self.claims = ClaimBook(client, experiment_id, heartbeat_s=claim_ttl_s / 10, ttl_s=claim_ttl_s)
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
        self._order_hash = order_hash(self.data.orders)
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
        """Run the probe and the heads named in ``todo`` (default: all) that no process has done or holds.

        ``probe`` in ``todo`` names the reference run. Every run is claimed first (:mod:`benchmark.run.claims`),
        so concurrent launches of a grid never give one (cell, head) two FINISHED runs; a unit held by
        another live process comes back ``busy``.
        """
        todo = {PROBE_HEAD, *(h.label for h in self.grid.heads)} if todo is None else todo
        results = []
        if PROBE_HEAD in todo:
            results.append(self._run_probe())
        for spec in self.grid.heads:
            if spec.label in todo:
                results.append(self._run_head(spec))
        return [result for result in results if result is not None]

    def prepare(self) -> None:
        """Build the cell's cached inputs (frozen features) without training anything."""
        if self.grid.regime == "frozen":
            _ = self.features

    def _claim(self, tags: dict[str, str], parent_run_id: str | None = None) -> Claim | Outcome:
        """Claim the unit of work ``tags`` name (role, cell, head and, for trials, the trial)."""
        key = {name: tags[name] for name in ("role", "cell_key", "head", TRIAL_TAG) if name in tags}
        name = "|".join(filter(None, (tags["head"], tags.get(TRIAL_TAG), tags["cell_key"])))
        return self.claims.try_claim(key, tags, run_name=name, parent_run_id=parent_run_id)

    def _unclaimed(self, head: str, outcome: Outcome) -> HeadResult | None:
        """None for a unit already FINISHED (nothing to report), a busy result for one held elsewhere."""
        if outcome.state is State.DONE:
            log.info("%s %s: already FINISHED, skipped", self.cell.key, head)
            return None
        log.info("%s %s: held by %s, offered again later", self.cell.key, head, outcome.owner or "another process")
        return HeadResult(head, {}, -1, 0.0, busy=True)

    # ---- runs -------------------------------------------------------------------------------------

    def _tags(self, label: str, head_type: str, role: str, init_hash: str, config_hash: str) -> dict[str, str]:
        c = self.cell
        return {
            "grid": self.grid.name, "cell_key": c.key, "pair_key": c.pair_key, "backbone": c.backbone,
            "dataset": c.dataset, "test_dataset": c.test_dataset, "head": label, "head_type": head_type,
            "regime": c.regime, "split": str(c.split), "seed": str(c.seed), "git_sha": git_sha(),
            "init_hash": init_hash, "order_hash": self._order_hash, "config_hash": config_hash,
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
            run.fail(f"{DIVERGED} {int((~np.isfinite(pred_u)).sum())} non-finite test predictions")
            return None
        test = self.data.test_idx
        mos, pred = self.data.mos[test], self.data.label_map.to_mos(pred_u)
        metrics = compute_metrics(mos, pred, self.data.label_map.error_range)
        run.log_metrics({metric_key(k): v for k, v in metrics.items()})
        run.log_predictions(pd.DataFrame({"image": self.data.rows.column("image")[test], "mos": mos, "pred": pred,
                                          "ref": self.data.rows.column("ref")[test]}))
        run.log_text(self.grid.to_yaml(), CONFIG_ARTIFACT)
        return metrics

    # ---- the probe --------------------------------------------------------------------------------

    def _run_probe(self) -> HeadResult | None:
        source = self.features
        config_hash = self.grid.run_config_hash(self.cell, HeadSpec(PROBE_HEAD, PROBE_HEAD))
        tags = self._tags(PROBE_HEAD, PROBE_HEAD, ROLE_REFERENCE, self.backbone_hash, config_hash)
        params = {**self._params(training=False), "probe.alphas": list(PROBE_ALPHAS)}
        claim = self._claim(tags)
        if not isinstance(claim, Claim):
            return self._unclaimed(PROBE_HEAD, claim)
        try:
            with RunRecorder(claim, tags, params) as run:
                probe = fit_probe(source.features.cpu().numpy(), self.data.targets.numpy(), self.data.train_idx,
                                  self.data.val_idx, self.data.rank_truth[self.data.val_idx])
                run.log_params({"probe.alpha": probe.alpha})
                run.log_metrics({"best_val_srcc": probe.val_srcc})
                metrics = self._score_test(run, probe.predictions[self.data.test_idx]) or {}
        except Exception as exc:  # noqa: BLE001 - recorded on the run; the grid goes on
            return HeadResult(PROBE_HEAD, {}, -1, 0.0, f"{type(exc).__name__}: {exc}")
        return HeadResult(PROBE_HEAD, metrics, -1, 0.0)

    # ---- a head -----------------------------------------------------------------------------------

    def build_model(self, spec: HeadSpec) -> tuple[nn.Module, nn.Module]:
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

    @functools.cached_property
    def _images(self) -> ImageSource:
        """The fine-tuning inputs: the datasets' image stores, opened once per cell."""
        return ImageSource(self.data.rows, self.data.policies, self.prep, self.seeds.augment, self.device)

    def _source(self):
        """The regime's inputs, with the patch stream at its start (every trial sees the same patches)."""
        return self.features if self.grid.regime == "frozen" else self._images.restart()

    def _init_hash(self, model: nn.Module) -> str:
        """Hash of the weights a pair shares at initialisation, taken from the model about to train:
        the backbone (as restored for this head) and, when frozen, the MLP trunk."""
        shared = self.backbone_hash if self.grid.regime == "frozen" else weights_fingerprint(self.backbone)
        if self.grid.regime == "frozen":
            shared += weights_fingerprint(model[0])
        return hashlib.sha256(shared.encode()).hexdigest()[:16]

    def _train(self, spec: HeadSpec, trial: Trial) -> FitResult:
        """Train one trial from the cell's shared init; the result holds the best epoch's weights."""
        model, head = self.build_model(spec)
        source = self._source()
        with tqdm(total=trial.settings.epochs, desc=f"{spec.label} {trial.key}", unit="epoch", leave=False) as bar:
            torch.manual_seed(self.seeds.train)  # dropout etc.: one stream per cell, the same for every trial
            result = fit(model, head, source, self.data.targets, self.data.train_idx, self.data.val_idx,
                         self.data.orders, trial.settings, self.device, bar,
                         val_truth=self.data.rank_truth[self.data.val_idx])
        return result

    def _run_head(self, spec: HeadSpec) -> HeadResult | None:
        config_hash = self.grid.run_config_hash(self.cell, spec)
        model, _ = self.build_model(spec)
        tags = self._tags(spec.label, spec.type, ROLE_RESULT, self._init_hash(model), config_hash)
        claim = self._claim(tags)
        if not isinstance(claim, Claim):
            return self._unclaimed(spec.label, claim)
        try:
            with RunRecorder(claim, tags, self._head_params(spec)) as run:
                return self._tune_and_score(spec, run, tags)
        except TrialBusy as exc:
            log.warning("%s %s: %s; offered again later", self.cell.key, spec.label, exc)
            return HeadResult(spec.label, {}, -1, 0.0, busy=True)
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
        model, head = self.build_model(spec)
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
        if len(self.trials) == 1:
            result = self._train(spec, trial)
            return TrialOutcome(trial, result, result.best_val_srcc)
        trial_tags = {**tags, "role": ROLE_TRIAL, TRIAL_TAG: trial.key}
        claim = self._claim(trial_tags, parent_run_id=parent_id)
        if isinstance(claim, Outcome) and claim.state is State.BUSY:
            raise TrialBusy(f"trial {trial.key} is held by {claim.owner or 'another process'}")
        if isinstance(claim, Outcome):  # FINISHED by an interrupted attempt: adopt it under this result run
            self.client.set_tag(claim.run_id, PARENT_TAG, parent_id)
            done = self.client.get_run(claim.run_id)
            return TrialOutcome(trial, None, float(done.data.metrics.get("best_val_srcc", float("nan"))), claim.run_id)
        with RunRecorder(claim, trial_tags, {**self._head_params(spec), **trial.values}) as child:
            result = self._train(spec, trial)
            child.log_curves(result.curves)
            child.log_metrics({"best_epoch": result.best_epoch, "best_val_srcc": result.best_val_srcc,
                               "train_seconds": result.seconds, "nonfinite_batches": result.nonfinite_batches})
        return TrialOutcome(trial, result, result.best_val_srcc, claim.run_id)

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
