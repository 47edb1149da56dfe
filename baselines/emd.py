"""EMD head: squared earth mover's distance between score distributions (NIMA-style)."""

from __future__ import annotations

import torch
from torch import Tensor

from baselines._common import BinDistributionHead
from baselines.registry import check_hparams, register_head
from dor_iqa.ordinal import at_least_float32, in_float32


@register_head()
class EMDHead(BinDistributionHead):
    """K-way softmax trained with the squared EMD between CDFs (registry name ``"emd"``).

    Loss ``mean_k (CDF_p(k) - CDF_q(k))^2`` (EMD with ``r = 2``, squared as in Hou et al. 2016: the same
    minimiser as NIMA's root, with a smooth gradient at zero), averaged over the batch.  The target ``q`` is
    a Gaussian centred on ``u`` integrated over each bin ``[i/K, (i+1)/K]`` and renormalised over [0, 1].
    Prediction: expectation of the bin centres under ``p``.

    Parameters
    ----------
    in_features : int
        Width of the feature vector.
    num_bins : int, default 28
        Number of bins ``K``; 28 matches the DOR heads.
    sigma : float, default 1.0
        Standard deviation of the target Gaussian, in bins (``sigma / K`` on the [0, 1] scale).
    """

    name = "emd"

    def __init__(self, in_features: int, num_bins: int = 28, sigma: float = 1.0) -> None:
        super().__init__(in_features, num_bins)
        check_hparams(self.name, {"sigma": sigma})
        self.sigma = float(sigma)

    def target_distribution(self, u: Tensor) -> Tensor:
        """Discretised Gaussian ``N(u, (sigma/K)^2)`` over the ``K`` bins, shape ``(B, K)``."""
        u = at_least_float32(u)
        edges = torch.arange(self.num_bins + 1, device=u.device, dtype=u.dtype) / self.num_bins
        cdf = torch.special.ndtr((edges - u.unsqueeze(-1)) * (self.num_bins / self.sigma))
        mass = cdf[..., 1:] - cdf[..., :-1]
        return mass / mass.sum(dim=-1, keepdim=True)

    @in_float32
    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """Squared EMD between ``softmax(outputs)`` and the target distribution, in at least float32."""
        cdf_pred = torch.cumsum(torch.softmax(outputs, dim=-1), dim=-1)
        cdf_true = torch.cumsum(self.target_distribution(u), dim=-1)
        return (cdf_pred - cdf_true).square().mean(dim=-1).mean()
