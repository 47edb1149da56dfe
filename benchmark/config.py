"""Grid YAML files: loading, validation and expansion into cells.

A grid names backbones × heads × datasets × splits × seeds and one regime. Validation is strict: an
unknown key or a bad value raises :class:`ConfigError` naming the key and the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from benchmark.data.errors import ImagePolicyError
from benchmark.data.policy import ImagePolicy, default_policy, parse_image_policy
from benchmark.schema import PROBE_HEAD, Cell, GridRecord, HeadSpec

REGIMES = ("frozen", "finetune")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "constant")
LABEL_NORMS = ("scale", "train-minmax")
HEAD_INITS = ("prior", "default")
TUNABLE = ("lr", "weight_decay")
"""Training settings a grid's ``tuning:`` may list values for (every head of a cell runs the same trials)."""


class ConfigError(ValueError):
    """A grid file has an unknown key or a bad value."""


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings shared by every head of a grid (so a pair differs only in its head)."""

    epochs: int
    batch_size: int
    patience: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    warmup_epochs: int
    head_lr_multiplier: float


@dataclass(frozen=True)
class BackboneSpec:
    """A timm backbone and where its initial weights come from (False: seeded random init)."""

    name: str
    pretrained: bool | str = False


@dataclass(frozen=True)
class DatasetPair:
    """Train on ``train``; score on ``test`` (the same dataset's test split when they are equal)."""

    train: str
    test: str


@dataclass(frozen=True)
class CustomDataset:
    """A CSV dataset (``image, score[, ref]``) declared in the grid."""

    csv: str
    higher_is_better: bool
    scale: tuple[float, float]
    image_policy: dict[str, Any] | None = None


def _setting(probe: bool = False) -> Any:
    """A grid field that every run logs as a param (with :class:`TrainSettings`); ``probe``: the closed-form
    probe's runs log it too."""
    return field(metadata={"setting": True, "probe": probe})


@dataclass(frozen=True)
class GridConfig:
    """A validated grid file."""

    name: str
    backbones: tuple[BackboneSpec, ...]
    heads: tuple[HeadSpec, ...]
    datasets: tuple[DatasetPair, ...]
    splits: int
    seeds: tuple[int, ...]
    regime: str = _setting(probe=True)
    training: TrainSettings
    hidden: int = _setting()
    dropout: float = _setting()
    image_size: int | None = _setting(probe=True)
    label_norm: str = _setting(probe=True)
    split_fractions: tuple[float, float, float] = _setting(probe=True)
    data_root: str | None
    custom_datasets: dict[str, CustomDataset]
    save_weights: bool = True
    tuning: tuple[tuple[str, tuple[float, ...]], ...] = ()
    """``((setting, values), ...)``: every head of a cell trains once per combination; val selects."""
    image_policies: dict[str, ImagePolicy] = field(default_factory=dict)
    """The image policy of every dataset of the grid (its default, the grid's override applied)."""
    rope: float = 0.01
    """Region of practical equivalence of the report's Bayesian test (SRCC/PLCC units); analysis only, so
    not part of a run's config hash."""
    compare: tuple[tuple[str, str], ...] = ()
    """Head pairs (A, B) the report tests; analysis only (default: :func:`default_compare`)."""
    split_correlation: float | None = None
    """The split correlation ``r`` the report's population target assumes; None: ``n_test / n_train`` (Nadeau &
    Bengio). An assumption one dataset cannot measure (the report gives the r* at which each conclusion would
    flip); a larger value makes the population tests more conservative. Analysis only."""
    source: str = "<dict>"

    def cells(self) -> list[Cell]:
        """Every cell of the grid, in a fixed order (backbone, dataset, split, seed): :meth:`GridRecord.cells`."""
        return self.record().cells()

    def backbone(self, name: str) -> BackboneSpec:
        """The spec of a backbone of this grid."""
        return next(b for b in self.backbones if b.name == name)

    def hyperparameters(self, probe: bool = False) -> dict[str, Any]:
        """Training hyper-parameters shared by every run of the grid, flattened for MLflow params (``probe``:
        only the settings the closed-form probe uses; its record leaves the training recipe out)."""
        grid = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("probe" if probe else "setting")}
        return grid if probe else {**asdict(self.training), **grid}

    def run_config_hash(self, cell: Cell, head: HeadSpec) -> str:
        """Hash of every setting that shapes the run of ``head`` in ``cell`` (logged as ``config_hash``).

        Resume skips a FINISHED run only when its hash matches, so an edited grid that keeps its name
        cannot silently mix old and new runs. The closed-form probe's hash covers only what it uses (its
        data, backbone, policies and label map), so editing the training recipe keeps its finished runs.
        """
        datasets = {name: asdict(spec) for name, spec in self.custom_datasets.items()
                    if name in (cell.dataset, cell.test_dataset)}
        policies = [self.image_policies[name].to_mapping() for name in (cell.dataset, cell.test_dataset)]
        data = (asdict(self.backbone(cell.backbone)), datasets, policies, self.image_size, self.label_norm,
                self.split_fractions)
        payload = data if head.type == PROBE_HEAD else (*data, self.hyperparameters(), asdict(head), self.tuning)
        return hashlib.sha256(repr(payload).encode()).hexdigest()[:16]

    def record(self) -> GridRecord:
        """What the report needs to know of this grid (logged on its experiment)."""
        from benchmark.heads import head_hparams

        heads = {h.label: replace(h, hparams={**head_hparams(h.type), **h.hparams}) for h in self.heads}
        return GridRecord(
            name=self.name, regime=self.regime, backbones=tuple(b.name for b in self.backbones), heads=heads,
            datasets=tuple((d.train, d.test) for d in self.datasets), splits=tuple(range(self.splits)),
            seeds=self.seeds, rope=self.rope, compare=self.compare, tuning=dict(self.tuning),
            split_fractions=self.split_fractions, split_correlation=self.split_correlation,
            random_init=tuple(b.name for b in self.backbones if b.pretrained is False))

    def to_yaml(self) -> str:
        """The resolved configuration (stored with every run)."""
        data = asdict(self)
        data.pop("source")
        data["image_policies"] = {name: policy.to_mapping() for name, policy in self.image_policies.items()}
        return yaml.safe_dump(_plain(data), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_TOP_KEYS = {
    "name", "backbones", "heads", "datasets", "splits", "seeds", "regime", "epochs", "batch_size",
    "early_stopping", "optimizer", "schedule", "frozen", "image_size", "label_norm", "split_fractions",
    "data_root", "custom_datasets", "save_weights", "head_init", "tuning", "image_policy", "rope", "compare",
    "split_correlation",
}
_REQUIRED = ("name", "backbones", "heads", "datasets")


class _Reader:
    """Reads values out of the parsed YAML, raising errors that name the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}': {message}")

    def mapping(self, value: Any, key: str, allowed: set[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                            f"unknown key; allowed keys: {', '.join(sorted(allowed))}")
        return value

    def number(self, value: Any, key: str, kind: type, low: float, high: float | None = None):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
            raise self.fail(key, f"expected {kind.__name__}, got {value!r}{hint}")
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise self.fail(key, f"value {value!r} must be {bound}")
        return kind(value)

    def choice(self, value: Any, key: str, options: tuple[str, ...]) -> str:
        if value not in options:
            raise self.fail(key, f"value {value!r} is not one of {', '.join(options)}")
        return value

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty name, got {value!r}")
        return value


def _backbones(r: _Reader, value: Any) -> tuple[BackboneSpec, ...]:
    items = value.items() if isinstance(value, dict) else ((v, None) for v in (value or []))
    specs = []
    for name, options in items:
        name = r.name(name, "backbones")
        options = r.mapping(options, f"backbones.{name}", {"pretrained"})
        pretrained = options.get("pretrained", False)
        if not isinstance(pretrained, (bool, str)):
            raise r.fail(f"backbones.{name}.pretrained", f"expected true, false or a weights file path, got {pretrained!r}")
        specs.append(BackboneSpec(name, pretrained))
    if not specs:
        raise r.fail("backbones", "list at least one timm backbone, e.g. 'efficientnet_lite0: {pretrained: true}'")
    return tuple(specs)


def _heads(r: _Reader, value: Any, default_init: str) -> tuple[HeadSpec, ...]:
    from benchmark.heads import hparam_problems, list_heads

    items = value.items() if isinstance(value, dict) else ((v, None) for v in (value or []))
    specs = []
    for label, options in items:
        label = r.name(label, "heads")
        if label == PROBE_HEAD:
            raise r.fail(f"heads.{label}", f"'{PROBE_HEAD}' is reserved for the linear-probe reference run every "
                                           "cell records; give the head another label")
        if options is not None and not isinstance(options, dict):
            raise r.fail(f"heads.{label}", f"expected a mapping of hyper-parameters, got {options!r}")
        options = dict(options or {})
        head_type = options.pop("type", label)
        init = r.choice(options.pop("init", default_init), f"heads.{label}.init", HEAD_INITS)
        if head_type not in list_heads():
            raise r.fail(f"heads.{label}", f"unknown head type {head_type!r}; known: {', '.join(list_heads())} "
                                           "(give 'type:' to name a variant, e.g. dor-k8: {type: dor, num_bins: 8})")
        for key, problem in hparam_problems(head_type, options).items():
            raise r.fail(f"heads.{label}.{key}", f"head type {head_type!r}: hyper-parameter {key!r} {problem}")
        specs.append(HeadSpec(label, head_type, options, init))
    if not specs:
        raise r.fail("heads", "list at least one head, e.g. 'mse: {}'")
    return tuple(specs)


def default_compare(labels: list[str]) -> tuple[tuple[str, str], ...]:
    """Without a ``compare:`` list, every head against the first head the grid lists (its reference).

    Examples
    --------
    >>> default_compare(["mse", "dor", "dor-seed"])
    (('dor', 'mse'), ('dor-seed', 'mse'))
    """
    return tuple((label, labels[0]) for label in labels[1:])


def _compare(r: _Reader, value: Any, labels: list[str]) -> tuple[tuple[str, str], ...]:
    if value is None:
        return default_compare(labels)
    if not isinstance(value, list) or not value:
        example = ", ".join(f"'{a}:{b}'" for a, b in default_compare(labels)[:2]) or "'A:B'"
        raise r.fail("compare", f"expected a list of head pairs, e.g. [{example}], got {value!r}")
    pairs = []
    for i, item in enumerate(value):
        pair = tuple(item.split(":")) if isinstance(item, str) else tuple(item) if isinstance(item, list) else ()
        if len(pair) != 2 or pair[0] == pair[1]:
            raise r.fail(f"compare[{i}]", f"expected 'A:B' or [A, B] with two different head labels, got {item!r}")
        unknown = [label for label in pair if label not in labels]
        if unknown:
            raise r.fail(f"compare[{i}]", f"names no head of this grid: {', '.join(unknown)} (heads: {', '.join(labels)})")
        pairs.append(pair)
    return tuple(pairs)


def _datasets(r: _Reader, value: Any) -> tuple[DatasetPair, ...]:
    pairs = []
    for i, item in enumerate(value or []):
        if isinstance(item, str):
            pairs.append(DatasetPair(item, item))
            continue
        item = r.mapping(item, f"datasets[{i}]", {"train", "test"})
        train = r.name(item.get("train"), f"datasets[{i}].train")
        pairs.append(DatasetPair(train, r.name(item.get("test", train), f"datasets[{i}].test")))
    if not pairs:
        raise r.fail("datasets", "list at least one dataset, e.g. 'bundled' or {train: koniq10k, test: livec}")
    return tuple(pairs)


def _custom(r: _Reader, value: Any) -> dict[str, CustomDataset]:
    out = {}
    for name, spec in r.mapping(value, "custom_datasets", set(value or {})).items():
        spec = r.mapping(spec, f"custom_datasets.{name}", {"csv", "higher_is_better", "scale", "image_policy"})
        if "csv" not in spec or "higher_is_better" not in spec or "scale" not in spec:
            raise r.fail(f"custom_datasets.{name}", "needs 'csv' (path to image,score[,ref]), 'higher_is_better' "
                                                    "and 'scale: [low, high]' (the declared score scale: an "
                                                    "observed range would let the test rows shape the labels)")
        scale = spec["scale"]
        if not (isinstance(scale, list) and len(scale) == 2 and scale[0] < scale[1]):
            raise r.fail(f"custom_datasets.{name}.scale", f"expected [low, high] with low < high, got {scale!r}")
        scale = (float(scale[0]), float(scale[1]))
        out[name] = CustomDataset(str(spec["csv"]), bool(spec["higher_is_better"]), scale, spec.get("image_policy"))
    return out


def _image_policies(r: _Reader, value: Any, datasets: tuple[DatasetPair, ...],
                    custom: dict[str, CustomDataset]) -> dict[str, ImagePolicy]:
    """Every dataset's policy: its literature default (or its custom declaration), then the grid's override."""
    overrides = r.mapping(value, "image_policy", set(value or {}))
    names = list(dict.fromkeys(name for pair in datasets for name in (pair.train, pair.test)))
    unused = sorted(set(overrides) - set(names))
    if unused:
        raise r.fail(f"image_policy.{unused[0]}", f"names no dataset of this grid (datasets: {', '.join(names)})")
    policies = {}
    try:
        for name in names:
            policy = default_policy(name)
            if name in custom:
                policy = parse_image_policy(custom[name].image_policy, f"{r.source}: custom_datasets.{name}.image_policy",
                                            policy)
            policies[name] = parse_image_policy(overrides.get(name), f"{r.source}: image_policy.{name}", policy)
    except ImagePolicyError as exc:
        raise ConfigError(str(exc)) from exc
    return policies


def _tuning(r: _Reader, value: Any) -> tuple[tuple[str, tuple[float, ...]], ...]:
    out = []
    for setting, values in r.mapping(value, "tuning", set(TUNABLE)).items():
        key = f"tuning.{setting}"
        if not isinstance(values, list) or not values:
            raise r.fail(key, f"expected a non-empty list of values, e.g. [3.0e-4, 1.0e-3, 3.0e-3], got {values!r}")
        numbers = tuple(r.number(v, key, float, 0.0) for v in values)
        if len(set(numbers)) != len(numbers):
            raise r.fail(key, f"lists a value twice: {list(values)}")
        out.append((setting, numbers))
    return tuple(out)


def _flag(r: _Reader, value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise r.fail(key, f"expected true or false, got {value!r}")
    return value


def parse_grid(data: Any, source: str = "<dict>") -> GridConfig:
    """Validate a parsed grid mapping and return a :class:`GridConfig`."""
    r = _Reader(source)
    data = r.mapping(data, "", _TOP_KEYS)
    for key in _REQUIRED:
        if key not in data:
            raise r.fail(key, "missing required key")
    stop = r.mapping(data.get("early_stopping"), "early_stopping", {"patience"})
    opt = r.mapping(data.get("optimizer"), "optimizer", {"name", "lr", "weight_decay", "head_lr_multiplier"})
    sched = r.mapping(data.get("schedule"), "schedule", {"name", "warmup_epochs"})
    frozen = r.mapping(data.get("frozen"), "frozen", {"hidden", "dropout"})
    seeds = data.get("seeds", [0])
    seeds = list(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not isinstance(seeds, list) or not seeds:
        raise r.fail("seeds", f"expected a count or a list of integers, got {seeds!r}")
    fractions = data.get("split_fractions", [0.6, 0.2, 0.2])
    if not (isinstance(fractions, list) and len(fractions) == 3 and abs(sum(fractions) - 1) < 1e-6
            and all(isinstance(f, (int, float)) and f > 0 for f in fractions)):
        raise r.fail("split_fractions", f"expected three positive fractions summing to 1, got {fractions!r}")
    image_size = data.get("image_size")
    datasets = _datasets(r, data["datasets"])
    custom = _custom(r, data.get("custom_datasets"))
    grid = GridConfig(
        name=r.name(data["name"], "name"),
        backbones=_backbones(r, data["backbones"]),
        heads=_heads(r, data["heads"], r.choice(data.get("head_init", "prior"), "head_init", HEAD_INITS)),
        datasets=datasets,
        splits=r.number(data.get("splits", 10), "splits", int, 1),
        seeds=tuple(r.number(s, "seeds", int, 0) for s in seeds),
        regime=r.choice(data.get("regime", "frozen"), "regime", REGIMES),
        training=TrainSettings(
            epochs=r.number(data.get("epochs", 30), "epochs", int, 1),
            batch_size=r.number(data.get("batch_size", 64), "batch_size", int, 1),
            patience=r.number(stop.get("patience", 10), "early_stopping.patience", int, 1),
            optimizer=r.choice(opt.get("name", "adamw"), "optimizer.name", OPTIMIZERS),
            lr=r.number(opt.get("lr", 1e-3), "optimizer.lr", float, 0.0),
            weight_decay=r.number(opt.get("weight_decay", 1e-4), "optimizer.weight_decay", float, 0.0),
            schedule=r.choice(sched.get("name", "cosine"), "schedule.name", SCHEDULES),
            warmup_epochs=r.number(sched.get("warmup_epochs", 0), "schedule.warmup_epochs", int, 0),
            head_lr_multiplier=r.number(opt.get("head_lr_multiplier", 1.0), "optimizer.head_lr_multiplier",
                                        float, 0.0),
        ),
        hidden=r.number(frozen.get("hidden", 256), "frozen.hidden", int, 1),
        dropout=r.number(frozen.get("dropout", 0.1), "frozen.dropout", float, 0.0, 0.95),
        image_size=None if image_size is None else r.number(image_size, "image_size", int, 32),
        label_norm=r.choice(data.get("label_norm", "scale"), "label_norm", LABEL_NORMS),
        split_fractions=tuple(float(f) for f in fractions),
        data_root=data.get("data_root"),
        custom_datasets=custom,
        save_weights=_flag(r, data.get("save_weights", True), "save_weights"),
        tuning=_tuning(r, data.get("tuning")),
        image_policies=_image_policies(r, data.get("image_policy"), datasets, custom),
        rope=r.number(data.get("rope", 0.01), "rope", float, 0.0, 1.0),
        split_correlation=None if data.get("split_correlation") is None else r.number(
            data["split_correlation"], "split_correlation", float, 0.0),
        source=source,
    )
    if len({h.label for h in grid.heads}) != len(grid.heads):
        raise r.fail("heads", "head labels must be unique")
    return replace(grid, compare=_compare(r, data.get("compare"), [h.label for h in grid.heads]))


def builtin_grids() -> list[str]:
    """Names of the grid files shipped in ``benchmark/configs``."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("benchmark.configs").iterdir()
                  if p.name.endswith(".yaml"))


def load_grid(path: str | Path | None = None) -> GridConfig:
    """Load and validate a grid file; ``None`` or a built-in name (``default``, ``paper``) loads a shipped grid."""
    if path is None or str(path) in builtin_grids():
        name = "default" if path is None else str(path)
        text = resources.files("benchmark.configs").joinpath(f"{name}.yaml").read_text()
        source = f"benchmark/configs/{name}.yaml"
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"grid file {file} does not exist; built-in grids: {', '.join(builtin_grids())}")
        text, source = file.read_text(), str(file)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    return parse_grid(data, source)
