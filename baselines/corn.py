"""CORN head (Shi, Cao & Raschka 2023): conditional ordinal binary tasks, via ``coral_pytorch``."""

from __future__ import annotations

import torch
from coral_pytorch.losses import corn_loss
from torch import Tensor, nn

from baselines.registry import register_head
from dor_iqa.ordinal import (
    bin_index,
    encode_labels,
    in_float32,
    reset_output_layer,
    smoothed_logit,
    soft_inference,
    validate_num_bins,
)


@register_head()
class CornHead(nn.Module):
    """Conditional ordinal head (registry name ``"corn"``).

    Logit ``k`` models ``P(y > k | y > k - 1)``; the cumulative product gives the unconditional
    ``P(y > k)`` (the CORN rank inference), and the prediction is their expected-rank form
    ``(sum_k P(y > k) + 0.5) / K``.

    Parameters
    ----------
    in_features : int
        Width of the feature vector.
    num_bins : int, default 28
        Number of ordinal classes ``K``; 28 matches the DOR heads.
    """

    name = "corn"

    def __init__(self, in_features: int, num_bins: int = 28) -> None:
        super().__init__()
        self.num_bins = validate_num_bins(num_bins)
        self.linear = nn.Linear(in_features, num_bins - 1)

    def forward(self, features: Tensor) -> Tensor:
        """Return the conditional logits, shape ``(B, K-1)``."""
        return self.linear(features)

    @in_float32
    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """``coral_pytorch.losses.corn_loss`` with classes ``min(floor(u K), K - 1)``, in at least float32."""
        return corn_loss(outputs, bin_index(u, self.num_bins), self.num_bins)

    @in_float32
    def predict(self, outputs: Tensor) -> Tensor:
        """Expected rank from the cumulative product of conditional probabilities, shape ``(B,)``."""
        return soft_inference(torch.cumprod(torch.sigmoid(outputs), dim=-1))

    def init_prior(self, u_train: Tensor) -> None:
        """Zero the weights; bias ``k`` = log-odds of the training fraction ``P(c >= k | c >= k - 1)``."""
        above = encode_labels(u_train, self.num_bins).sum(dim=0)
        at_risk = torch.cat([above.new_tensor([float(u_train.numel())]), above[:-1]])
        reset_output_layer(self.linear, smoothed_logit(above, at_risk))
