"""Study ``friedman``: three equal heads on :data:`MIN_INDEPENDENT_BLOCKS` cells.

Type-I error of the Friedman test over (cell x split) blocks vs over independent cell blocks
(``independent_blocks``), and how often the critical-difference diagram is drawn and a pairwise signed-rank
test with Holm rejects. The rates: ``summary.json`` (``friedman``).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

import numpy as np
import pandas as pd

from benchmark.analysis.stats import (
    MIN_INDEPENDENT_BLOCKS,
    critical_difference_decision,
    friedman_test,
    independent_blocks,
    pairwise_signed_rank_holm,
)
from benchmark.schema import COLUMNS

from .common import rate
from .ridge import GridModel, simulate


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """Three equal heads on 10 cells: Friedman over (cell x split) vs independent cell blocks, and post-hoc rates.

    Over the cell blocks also: how often the critical-difference diagram would be drawn
    (``critical_difference_decision``) and how often any pair is significant by the pairwise signed-rank
    tests with Holm (``pairwise_signed_rank_holm``) — both family-wise errors under this null.
    """
    n_cells = MIN_INDEPENDENT_BLOCKS
    model = GridModel(n_refs=500, private_variances=(0.1, 0.1, 0.1))
    srcc = simulate(model, args.n_friedman_grids * n_cells, rng, "friedman")
    heads = ["h0", "h1", "h2"]
    rows = []
    for grid in range(args.n_friedman_grids):
        values = srcc[grid * n_cells : (grid + 1) * n_cells]  # (cells, splits, heads)
        split_blocks = pd.DataFrame(values.reshape(-1, len(heads)), columns=heads)
        runs = pd.DataFrame({
            COLUMNS.backbone: "sim", COLUMNS.dataset: np.repeat(np.arange(n_cells), model.n_splits * len(heads)),
            COLUMNS.split: np.tile(np.repeat(np.arange(model.n_splits), len(heads)), n_cells),
            COLUMNS.head: np.tile(heads, n_cells * model.n_splits), "srcc": values.ravel()})
        cell_blocks, reason = independent_blocks(runs, "srcc", seed=None)
        if cell_blocks is None:
            raise RuntimeError(reason)
        rows.append({"p_cell_split_blocks": friedman_test(split_blocks)[1],
                     "p_cell_blocks": friedman_test(cell_blocks)[1],
                     "cd_drawn": critical_difference_decision(cell_blocks, args.alpha)[0],
                     "any_pair_holm": bool(pairwise_signed_rank_holm(cell_blocks, args.alpha)["significant"].any())})
    table = pd.DataFrame(rows)
    tables["friedman"] = table
    return {
        "settings": {**asdict(model), "n_cells": n_cells, "n_grids": args.n_friedman_grids},
        "cell_split_blocks": {"n_blocks": n_cells * model.n_splits, **rate(table["p_cell_split_blocks"] < args.alpha)},
        "cell_blocks": {"n_blocks": n_cells, **rate(table["p_cell_blocks"] < args.alpha)},
        "critical_difference_drawn": rate(table["cd_drawn"]),
        "pairwise_signed_rank_holm_any": rate(table["any_pair_holm"]),
    }
