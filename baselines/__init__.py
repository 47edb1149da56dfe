"""Comparison heads for the DOR-IQA benchmark; every head follows the same protocol as ``DORHead``.

Importing the package imports every module in it, so each ``@register_head`` class is registered.
"""

import importlib
import pkgutil

from baselines.registry import HEADS, register_head

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["HEADS", "register_head"]
