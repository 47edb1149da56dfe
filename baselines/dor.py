"""The method's own heads (:mod:`dor_iqa`, which depends on torch only) in the registry."""

from __future__ import annotations

from baselines.registry import register_head
from dor_iqa.ordinal import DORHead
from dor_iqa.seed_compat import SeedDORHead

register_head()(DORHead)
register_head()(SeedDORHead)
