"""DOR-IQA: deep ordinal regression for no-reference image quality assessment (corrected maths).

The published maths, bugs included, live in :mod:`dor_iqa.seed_compat` for the ablation.
"""

from dor_iqa.ordinal import (
    DORHead,
    bin_index,
    encode_labels,
    encode_soft_labels,
    hard_inference,
    ordinal_loss,
    soft_inference,
    threshold_logits,
)

__all__ = [
    "DORHead",
    "bin_index",
    "encode_labels",
    "encode_soft_labels",
    "hard_inference",
    "ordinal_loss",
    "soft_inference",
    "threshold_logits",
]
