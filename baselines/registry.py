"""The head registry: ``@register_head(...)`` on a class with a ``name`` attribute makes it usable in grids.

A new head is one file in ``baselines/`` whose class carries ``@register_head`` (the package imports
every module in it, the way timm's ``@register_model`` works); ``benchmark.heads`` builds heads by name.
The decorator's keywords declare the head's hyper-parameters — type, default and bounds, as DomainBed's
hparams registry does — so a grid's values are checked before anything trains; the declaration must
match the class's ``__init__`` keywords and defaults, or registration fails.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

HEADS: dict[str, type[nn.Module]] = {}
"""Registry name -> head class."""
HPARAMS: dict[str, dict[str, HParam]] = {}
"""Registry name -> declared hyper-parameters."""

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
        numbers = int if self.type is int else (int, float)
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


def register_head(**hparams: HParam) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register a head under its ``name`` with its declared hyper-parameters.

    Raises
    ------
    TypeError
        When the class has no ``name``, lacks a method of the head protocol, the name is taken by another
        class, or the declared hyper-parameters differ from the ``__init__`` keywords or their defaults.
    """

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} needs a class attribute 'name' (its registry name) to be registered.")
        missing = [method for method in REQUIRED_METHODS if not callable(getattr(cls, method, None))]
        if missing:
            raise TypeError(f"head {name!r} ({cls.__qualname__}) lacks {', '.join(missing)} of the head protocol.")
        if HEADS.get(name, cls) is not cls:
            raise TypeError(f"head name {name!r} is registered twice ({HEADS[name].__qualname__}, {cls.__qualname__}).")
        signature = {key: p.default for key, p in inspect.signature(cls.__init__).parameters.items()
                     if key not in ("self", "in_features")}
        declared = {key: spec.default for key, spec in hparams.items()}
        if signature != declared:
            raise TypeError(f"head {name!r}: declared hyper-parameters {declared} differ from __init__'s keywords "
                            f"and defaults {signature}; declare every keyword with its default.")
        HEADS[name] = cls
        HPARAMS[name] = dict(hparams)
        return cls

    return register
