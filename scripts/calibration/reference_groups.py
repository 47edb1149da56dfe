"""Study ``reference_groups``: the ``effects`` study under the suite's protocol.

33 references x 50 images, splits by reference, a share of the features and of the label noise common to a
reference (:class:`.ridge.GridModel`'s ``ref_feature_share``, ``ref_noise_share``). The rates:
``summary.json`` (``reference_groups``) and ``verdicts.png``.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from .effects import effect_study
from .ridge import GridModel


def run(args: argparse.Namespace, rng: np.random.Generator, tables: dict[str, pd.DataFrame]) -> dict:
    """The effects study under the suite's protocol: 33 references x 50 images, splits by reference."""
    model = GridModel(n_refs=33, images_per_ref=50, ref_feature_share=0.5, ref_noise_share=0.5,
                      private_variances=(0.02, 0.02))
    return effect_study(model, args.n_group_sims, args.alpha, args.rope, rng, "reference_groups", tables)
