"""Comparison heads for the DOR-IQA benchmark; every head follows the same protocol as ``DORHead``.

Importing the package imports no head (and no torch): :func:`baselines.registry.load_heads` imports every
module in it, so each ``@register_head()`` class is registered.
"""
