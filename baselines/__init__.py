"""Comparison heads for the DOR-IQA benchmark; every head follows the same protocol as ``DORHead``."""

from baselines.coral import CoralHead
from baselines.corn import CornHead
from baselines.emd import EMDHead
from baselines.mse import L1Head, MSEHead
from baselines.sord import SORDHead

__all__ = ["CoralHead", "CornHead", "EMDHead", "L1Head", "MSEHead", "SORDHead"]
