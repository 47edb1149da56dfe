"""Seeded train/val/test splits that keep whole content groups (``ref``) on one side."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.data.errors import SplitError

PARTS: tuple[str, ...] = ("train", "val", "test")


def make_split(
    labels: pd.DataFrame, seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> dict[str, pd.DataFrame]:
    """Split a label table into train/val/test with every ``ref`` group on exactly one side.

    The distinct ``ref`` values are shuffled with ``numpy.random.default_rng(seed)`` and laid end to
    end by row count; a group goes to the part in which the midpoint of its row span falls, so the
    parts hold the requested fractions of ROWS as closely as whole groups allow (exactly, up to one
    row, for authentic datasets whose groups are single images). Every part gets at least one group.

    Parameters
    ----------
    labels : pandas.DataFrame
        A label table with a ``ref`` column.
    seed : int
        Split seed; the same seed and table give the same split.
    fractions : (float, float, float)
        Target row fractions of train, val and test; positive, summing to 1.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``{"train", "val", "test"}`` -> the rows of each part, in their original order and with their
        original index (so they can be mapped back to the full table).

    Raises
    ------
    SplitError
        For bad fractions or fewer ``ref`` groups than parts.

    Examples
    --------
    >>> table = pd.DataFrame({"ref": list("aabbccddee")})
    >>> parts = make_split(table, seed=0)
    >>> sorted(len(part) for part in parts.values())
    [2, 2, 6]
    """
    if len(fractions) != len(PARTS) or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise SplitError(f"fractions={fractions!r} must be {len(PARTS)} positive numbers summing to 1.")
    if "ref" not in labels.columns:
        raise SplitError(f"the label table has no 'ref' column (columns: {list(labels.columns)}).")
    sizes = labels.groupby("ref", sort=True).size()
    if len(sizes) < len(PARTS):
        raise SplitError(
            f"only {len(sizes)} content groups (distinct 'ref' values); a train/val/test split needs at least "
            f"{len(PARTS)}. Use a dataset with more reference images."
        )
    order = np.random.default_rng(seed).permutation(len(sizes))
    counts = sizes.to_numpy()[order]
    midpoints = (np.cumsum(counts) - counts / 2.0) / counts.sum()
    boundaries = np.cumsum(fractions)[:-1]
    cuts = np.searchsorted(midpoints, boundaries).tolist()
    # every part keeps at least one group: clamp the cut indices into [1, G-1] and keep them increasing
    cuts[0] = min(max(cuts[0], 1), len(counts) - (len(PARTS) - 1))
    for index in range(1, len(cuts)):
        cuts[index] = min(max(cuts[index], cuts[index - 1] + 1), len(counts) - (len(PARTS) - 1 - index))
    groups = np.split(sizes.index.to_numpy()[order], cuts)
    return {part: labels[labels["ref"].isin(set(members))] for part, members in zip(PARTS, groups)}
