"""Small helpers shared by the baseline heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dor_iqa.ordinal import bin_index, in_float32, reset_output_layer, validate_num_bins


def bin_centres(num_bins: int, like: Tensor) -> Tensor:
    """Centres ``(i + 0.5) / K`` of the ``K`` equal bins of [0, 1], on ``like``'s device and dtype.

    Parameters
    ----------
    num_bins : int
        Number of bins ``K``.
    like : Tensor
        Tensor whose device and dtype the result takes.

    Returns
    -------
    Tensor, shape (K,)
        Bin centres.
    """
    return (torch.arange(num_bins, device=like.device, dtype=like.dtype) + 0.5) / num_bins


class BinDistributionHead(nn.Module):
    """Base of the heads that predict a distribution over ``K`` equal bins of [0, 1] (SORD, EMD).

    ``forward`` gives ``K`` class logits; ``predict`` is the expectation of the bin centres under their
    softmax; ``init_prior`` starts the softmax at the smoothed training bin frequencies. Subclasses
    define ``loss``.
    """

    def __init__(self, in_features: int, num_bins: int) -> None:
        super().__init__()
        self.num_bins = validate_num_bins(num_bins)
        self.linear = nn.Linear(in_features, num_bins)

    def forward(self, features: Tensor) -> Tensor:
        """Return the class logits, shape ``(B, K)``."""
        return self.linear(features)

    @in_float32
    def predict(self, outputs: Tensor) -> Tensor:
        """Expected bin centre under the softmax, shape ``(B,)``."""
        probs = torch.softmax(outputs, dim=-1)
        return (probs * bin_centres(self.num_bins, probs)).sum(dim=-1)

    def init_prior(self, u_train: Tensor) -> None:
        """Zero the weights; biases = log of the training bin frequencies (add-half smoothed), so the
        first softmax is that histogram."""
        counts = torch.bincount(bin_index(u_train, self.num_bins), minlength=self.num_bins).double()
        reset_output_layer(self.linear, torch.log((counts + 0.5) / (counts.sum() + 0.5 * self.num_bins)))
