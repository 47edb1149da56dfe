"""The random streams of a cell — what makes the heads of a cell a matched pair.

Every stream is seeded by SHA-256 of the cell's explicit fields (stable across processes and machines,
unlike ``hash``), never of its display key, so reformatting a key or a tag changes no result:

==================  ==================================================  ==========================================
stream              seeded from                                         shared by
==================  ==================================================  ==========================================
``order``           (backbone, dataset, test dataset, regime, split,     every head and trial of the cell
                    seed) + ``order``
``augment``         the same fields + ``augment``                        every head and trial (patches, flips)
``trunk``           the same fields + ``trunk``                          every head and trial (frozen MLP init)
``train``           the same fields + ``train``                          every head and trial (dropout)
``head(label)``     the same fields + ``head`` + the head's label        one head, all its trials (its layer)
``backbone``        (backbone, seed) + ``backbone``                      every split of a seed (a random backbone
                                                                         init, so frozen features are computed
                                                                         once per seed)
==================  ==================================================  ==========================================

So two heads of a cell differ only in their own layer's initial weights (which ``init_prior`` then
overwrites for the output layer) and in what their losses do with the same batches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from benchmark.schema import Cell


def stable_seed(*fields: object) -> int:
    """A 31-bit seed from SHA-256 of the JSON list of ``fields``.

    Examples
    --------
    >>> stable_seed("resnet50", 0, "backbone") == stable_seed("resnet50", 0, "backbone")
    True
    >>> stable_seed("a", 1) != stable_seed("a", "1")  # typed fields, not text
    True
    """
    text = json.dumps(list(fields), separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class CellSeeds:
    """Seeds of the random streams of one cell (see the module table)."""

    cell: Cell

    def stream(self, name: str, *extra: object) -> int:
        """The seed of a named stream of the cell (the harness's are the properties below; the synthetic store
        names its own)."""
        c = self.cell
        return stable_seed(c.backbone, c.dataset, c.test_dataset, c.regime, c.split, c.seed, name, *extra)

    @property
    def order(self) -> int:
        """Per-epoch sample order."""
        return self.stream("order")

    @property
    def augment(self) -> int:
        """Training patches and flips (fine-tuning)."""
        return self.stream("augment")

    @property
    def trunk(self) -> int:
        """Initial weights of the frozen regime's MLP trunk."""
        return self.stream("trunk")

    @property
    def train(self) -> int:
        """Dropout and any other randomness drawn while training."""
        return self.stream("train")

    @property
    def backbone(self) -> int:
        """A randomly initialised backbone's weights (shared by all splits of a seed)."""
        return stable_seed(self.cell.backbone, self.cell.seed, "backbone")

    def head(self, label: str) -> int:
        """Initial weights of one head."""
        return self.stream("head", label)


__all__ = ["CellSeeds", "stable_seed"]
