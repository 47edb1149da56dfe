"""Scalar regression heads: MSE (the usual IQA baseline) and L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.registry import register_head
from dor_iqa.ordinal import in_float32, reset_output_layer


@register_head()
class MSEHead(nn.Module):
    """Linear layer to one score trained with the mean squared error on ``u`` (registry name ``"mse"``).

    Parameters
    ----------
    in_features : int
        Width of the feature vector.
    """

    name = "mse"

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, features: Tensor) -> Tensor:
        """Return the raw score, shape ``(B,)``."""
        return self.linear(features).squeeze(-1)

    def _criterion(self, outputs: Tensor, u: Tensor) -> Tensor:
        return F.mse_loss(outputs, u)

    def _location(self, u_train: Tensor) -> Tensor:
        return u_train.mean()

    @in_float32
    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """Regression loss against ``u`` (shape ``(B,)``), in at least float32."""
        return self._criterion(outputs, u)

    @in_float32
    def predict(self, outputs: Tensor) -> Tensor:
        """The raw score, shape ``(B,)`` — not clamped, so ranks never tie at the ends of the scale."""
        return outputs

    def init_prior(self, u_train: Tensor) -> None:
        """Zero the weights and start the bias at the training targets' location (mean; median for L1)."""
        reset_output_layer(self.linear, self._location(u_train.double()).reshape(1))


@register_head()
class L1Head(MSEHead):
    """Like :class:`MSEHead` but trained with the mean absolute error (registry name ``"l1"``)."""

    name = "l1"

    def _criterion(self, outputs: Tensor, u: Tensor) -> Tensor:
        return F.l1_loss(outputs, u)

    def _location(self, u_train: Tensor) -> Tensor:
        return torch.quantile(u_train, 0.5)
