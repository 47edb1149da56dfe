"""The random streams of a cell — what makes the heads of a cell a matched pair.

Every stream is seeded from a text by SHA-256 (stable across processes and machines, unlike ``hash``):

==================  ==========================  =============================================
stream              seeded from                 shared by
==================  ==========================  =============================================
``order``           the cell key                every head and trial of the cell
``augment``         cell key + ``augment``      every head and trial (crops, patches, flips)
``trunk``           cell key + ``trunk``        every head and trial (frozen MLP trunk init)
``train``           cell key + ``train``        every head and trial (dropout during training)
``head(label)``     cell key + head label       one head, all its trials (its output layer)
``backbone``        backbone name + seed        every split of a seed (a random backbone init,
                                                so frozen features are computed once per seed)
==================  ==========================  =============================================

So two heads of a cell differ only in their own layer's initial weights (which ``init_prior`` then
overwrites for the output layer) and in what their losses do with the same batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def stable_seed(text: str) -> int:
    """A 31-bit seed derived from a text by SHA-256.

    Examples
    --------
    >>> stable_seed("resnet50|seed0") == stable_seed("resnet50|seed0")
    True
    """
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class CellSeeds:
    """Seeds of the random streams of one cell (see the module table)."""

    cell_key: str
    backbone_name: str
    seed: int

    @property
    def order(self) -> int:
        """Per-epoch sample order."""
        return stable_seed(self.cell_key)

    @property
    def augment(self) -> int:
        """Training crops, patches and flips (fine-tuning)."""
        return stable_seed(f"{self.cell_key}|augment")

    @property
    def trunk(self) -> int:
        """Initial weights of the frozen regime's MLP trunk."""
        return stable_seed(f"{self.cell_key}|trunk")

    @property
    def train(self) -> int:
        """Dropout and any other randomness drawn while training."""
        return stable_seed(f"{self.cell_key}|train")

    @property
    def backbone(self) -> int:
        """A randomly initialised backbone's weights (shared by all splits of a seed)."""
        return stable_seed(f"{self.backbone_name}|seed{self.seed}")

    def head(self, label: str) -> int:
        """Initial weights of one head."""
        return stable_seed(f"{self.cell_key}|{label}")


__all__ = ["CellSeeds", "stable_seed"]
