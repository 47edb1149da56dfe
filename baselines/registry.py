"""The head registry: ``@register_head`` on a class with a ``name`` attribute makes it usable in grids.

A new head is one file in ``baselines/`` whose class carries ``@register_head`` (the package imports
every module in it, the way timm's ``@register_model`` works); ``benchmark.heads`` builds heads by name.
"""

from __future__ import annotations

from torch import nn

HEADS: dict[str, type[nn.Module]] = {}
"""Registry name -> head class."""

REQUIRED_METHODS = ("forward", "loss", "predict", "init_prior")


def register_head(cls: type[nn.Module]) -> type[nn.Module]:
    """Register a head class under its ``name`` attribute and return it unchanged (a class decorator).

    Raises
    ------
    TypeError
        When the class has no ``name``, lacks a method of the head protocol, or the name is taken by
        another class.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a class attribute 'name' (its registry name) to be registered.")
    missing = [method for method in REQUIRED_METHODS if not callable(getattr(cls, method, None))]
    if missing:
        raise TypeError(f"head {name!r} ({cls.__qualname__}) lacks {', '.join(missing)} of the head protocol.")
    if HEADS.get(name, cls) is not cls:
        raise TypeError(f"head name {name!r} is registered twice ({HEADS[name].__qualname__}, {cls.__qualname__}).")
    HEADS[name] = cls
    return cls
