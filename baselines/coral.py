"""CORAL head (Cao, Mirjalili & Raschka 2020) built on ``coral_pytorch``."""

from __future__ import annotations

import torch
from coral_pytorch.layers import CoralLayer
from coral_pytorch.losses import coral_loss
from torch import Tensor, nn

from baselines.registry import register_head
from dor_iqa.ordinal import encode_labels, in_float32, smoothed_logit, soft_inference, validate_num_bins


@register_head()
class CoralHead(nn.Module):
    """Rank-consistent ordinal head: one shared weight vector, ``K - 1`` biases (registry name ``"coral"``).

    Levels are the same extended binary vectors as ``coral_pytorch.dataset.levels_from_labelbatch``
    for class ``min(floor(u K), K - 1)``, built vectorised on the input's device with
    :func:`dor_iqa.ordinal.encode_labels` (``levels_from_labelbatch`` loops in Python over CPU tensors).

    Parameters
    ----------
    in_features : int
        Width of the feature vector.
    num_bins : int, default 28
        Number of ordinal classes ``K``; 28 matches the DOR heads so the comparison is like for like.
    preinit_bias : bool, default True
        ``CoralLayer``'s descending bias initialisation.
    """

    name = "coral"

    def __init__(self, in_features: int, num_bins: int = 28, preinit_bias: bool = True) -> None:
        super().__init__()
        self.num_bins = validate_num_bins(num_bins)
        self.layer = CoralLayer(in_features, num_bins, preinit_bias=preinit_bias)

    def forward(self, features: Tensor) -> Tensor:
        """Return the threshold logits, shape ``(B, K-1)``."""
        return self.layer(features)

    @in_float32
    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """``coral_pytorch.losses.coral_loss`` against the levels of ``u``, in at least float32."""
        return coral_loss(outputs, encode_labels(u, self.num_bins).to(outputs.dtype))

    @in_float32
    def predict(self, outputs: Tensor) -> Tensor:
        """``(sum_k sigmoid(logit_k) + 0.5) / K``, shape ``(B,)``."""
        return soft_inference(torch.sigmoid(outputs))

    @torch.no_grad()
    def init_prior(self, u_train: Tensor) -> None:
        """Zero the shared weight vector; each threshold's bias = log-odds of the training fraction above it."""
        counts = encode_labels(u_train, self.num_bins).sum(dim=0)
        self.layer.coral_weights.weight.zero_()
        self.layer.coral_bias.copy_(smoothed_logit(counts, float(u_train.numel())))
