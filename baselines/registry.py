"""The head registry: every head's hyper-parameters declared in one torch-free table, and the classes.

:data:`HPARAMS` declares each registered head's hyper-parameters — type, default and bounds, as DomainBed's
hparams registry does — and imports no torch, so parsing and checking a grid never loads it. A head class
in ``baselines/`` carries ``@register_head()``; :func:`load_heads` imports every module of the package
(the way timm's ``@register_model`` works) and returns the classes. Registration fails when the class's
``__init__`` keywords and defaults differ from its declaration, so the two cannot drift apart. A new head
is one file in ``baselines/`` plus its line in :data:`HPARAMS`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from numbers import Integral, Real
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

REQUIRED_METHODS = ("forward", "loss", "predict", "init_prior")


@dataclass(frozen=True)
class HParam:
    """One declared hyper-parameter: its type, default and (for numbers) bounds.

    ``low``/``high`` are inclusive unless ``open_low``/``open_high``; ``None`` leaves a side unbounded.
    ``type`` is ``int``, ``float``, ``bool`` or ``str``; an int is accepted where a float is declared.

    Examples
    --------
    >>> HParam(float, 1.0, low=0.0, open_low=True).problem(0.0)
    'must be > 0.0, got 0.0'
    >>> HParam(int, 28, low=2).problem(8) is None
    True
    """

    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False
    """Whether ``None`` is a valid value."""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if value is None and self.optional:
            return None
        expected = f"expected {self.type.__name__}{' or null' if self.optional else ''}, got {value!r}"
        if self.type in (bool, str):
            return None if isinstance(value, self.type) else expected
        numbers = Integral if self.type is int else Real  # numpy's scalars too
        if isinstance(value, bool) or not isinstance(value, numbers) or not math.isfinite(value):
            return expected
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return f"must be {'>' if self.open_low else '>='} {self.low}, got {value!r}"
        if self.high is not None and (value >= self.high if self.open_high else value > self.high):
            return f"must be {'<' if self.open_high else '<='} {self.high}, got {value!r}"
        return None


NUM_BINS = HParam(int, 28, low=2)
"""The number of bins K of every binned or ordinal head (the paper's value by default)."""


def positive(default: float) -> HParam:
    """A float hyper-parameter that must be > 0."""
    return HParam(float, default, low=0.0, open_low=True)


HPARAMS: dict[str, dict[str, HParam]] = {
    "mse": {},
    "l1": {},
    "dor": {"num_bins": NUM_BINS, "soft_targets": HParam(bool, False)},
    "dor-seed": {"num_bins": NUM_BINS, "min_score": HParam(float, 0.0), "max_score": HParam(float, 1.0),
                 "ignore_index": HParam(int, 0, optional=True)},
    "coral": {"num_bins": NUM_BINS, "preinit_bias": HParam(bool, True)},
    "corn": {"num_bins": NUM_BINS},
    "sord": {"num_bins": NUM_BINS, "alpha": positive(1.0)},
    "emd": {"num_bins": NUM_BINS, "sigma": positive(1.0)},
}
"""Registry name -> declared hyper-parameters of every head a grid may name."""
HEADS: dict[str, type[nn.Module]] = {}
"""Registry name -> head class (filled by :func:`load_heads`)."""


def register_head() -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a head under its ``name``, checked against its :data:`HPARAMS` declaration.

    Raises
    ------
    TypeError
        When the class has no ``name``, its name is not declared in :data:`HPARAMS`, it lacks a method of
        the head protocol, the name is taken by another class, or the declared hyper-parameters differ from
        the ``__init__`` keywords or their defaults.
    """

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} needs a class attribute 'name' (its registry name) to be registered.")
        if name not in HPARAMS:
            raise TypeError(f"head {name!r} ({cls.__qualname__}) is not declared: add its hyper-parameters to "
                            "HPARAMS in baselines/registry.py.")
        missing = [method for method in REQUIRED_METHODS if not callable(getattr(cls, method, None))]
        if missing:
            raise TypeError(f"head {name!r} ({cls.__qualname__}) lacks {', '.join(missing)} of the head protocol.")
        if HEADS.get(name, cls) is not cls:
            raise TypeError(f"head name {name!r} is registered twice ({HEADS[name].__qualname__}, {cls.__qualname__}).")
        signature = {key: p.default for key, p in inspect.signature(cls.__init__).parameters.items()
                     if key not in ("self", "in_features")}
        declared = {key: spec.default for key, spec in HPARAMS[name].items()}
        if signature != declared:
            raise TypeError(f"head {name!r}: declared hyper-parameters {declared} differ from __init__'s keywords "
                            f"and defaults {signature}; declare every keyword with its default.")
        HEADS[name] = cls
        return cls

    return register


def hparam_problems(name: str, hparams: dict[str, Any]) -> dict[str, str]:
    """Why each given hyper-parameter does not fit head ``name``'s declaration: ``{key: reason}`` (empty: fine).

    Examples
    --------
    >>> hparam_problems("sord", {"alpha": 0.0, "sigma": 1.0})
    {'sigma': 'is not declared (declared: num_bins, alpha)', 'alpha': 'must be > 0.0, got 0.0'}
    >>> hparam_problems("dor", {"num_bins": 8})
    {}
    """
    declared = HPARAMS[name]
    problems = {key: f"is not declared (declared: {', '.join(declared) or 'none'})"
                for key in sorted(set(hparams) - set(declared))}
    for key, spec in declared.items():
        problem = spec.problem(hparams[key]) if key in hparams else None
        if problem:
            problems[key] = problem
    return problems


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the head, each key and its problem when ``hparams`` do not fit the declaration
    (what a head's ``__init__`` calls, so a head built directly is held to the same bounds as one a grid names)."""
    problems = hparam_problems(name, hparams)
    if problems:
        raise ValueError(f"head {name!r}: " + "; ".join(f"hyper-parameter {k!r} {v}" for k, v in problems.items()) + ".")


def load_heads() -> dict[str, type[nn.Module]]:
    """Import every module of ``baselines`` (each registers its classes) and return the registry's classes."""
    package = importlib.import_module("baselines")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name != "registry":
            importlib.import_module(f"baselines.{module.name}")
    return HEADS
