"""SORD head: soft ordinal labels (Díaz & Marathe, CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines._common import BinDistributionHead, bin_centres
from baselines.registry import check_hparams, register_head
from dor_iqa.ordinal import at_least_float32, in_float32


@register_head()
class SORDHead(BinDistributionHead):
    """K-way softmax trained on soft ordinal labels (registry name ``"sord"``).

    Target ``q_i = softmax_i(-alpha * d_i^2)`` with ``d_i = K (t_i - u)`` the distance from ``u`` to bin
    centre ``t_i = (i + 0.5) / K`` measured in bins (the rank scale of Díaz & Marathe; squared distance is
    their metric penalty).  Loss: ``KL(q || p)`` averaged over the batch (same gradient as their
    cross-entropy).  Prediction: expectation of the bin centres under ``p``.

    Parameters
    ----------
    in_features : int
        Width of the feature vector.
    num_bins : int, default 28
        Number of bins ``K``; 28 matches the DOR heads.
    alpha : float, default 1.0
        Sharpness of the soft labels (per squared bin); a neighbouring bin gets ``exp(-alpha)`` of the
        weight of the bin at distance 0.
    """

    name = "sord"

    def __init__(self, in_features: int, num_bins: int = 28, alpha: float = 1.0) -> None:
        super().__init__(in_features, num_bins)
        check_hparams(self.name, {"alpha": alpha})
        self.alpha = float(alpha)

    def soft_labels(self, u: Tensor) -> Tensor:
        """SORD targets ``softmax(-alpha * (K (t_i - u))^2)``, shape ``(B, K)``, at least float32."""
        u = at_least_float32(u)
        distance = (bin_centres(self.num_bins, u) - u.unsqueeze(-1)) * self.num_bins
        return torch.softmax(-self.alpha * distance.square(), dim=-1)

    @in_float32
    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """``KL(soft_labels(u) || softmax(outputs))``, batch mean, in at least float32."""
        return F.kl_div(F.log_softmax(outputs, dim=-1), self.soft_labels(u), reduction="batchmean")
