"""Scalar regression heads: MSE (the usual IQA baseline) and L1."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dor_iqa.ordinal import at_least_float32, autocast_disabled


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

    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """Regression loss against ``u`` (shape ``(B,)``), in at least float32."""
        outputs = at_least_float32(outputs)
        with autocast_disabled(outputs):
            return self._criterion(outputs, u.to(outputs.dtype))

    def predict(self, outputs: Tensor) -> Tensor:
        """The raw score clamped to [0, 1], shape ``(B,)``."""
        return at_least_float32(outputs).clamp(0.0, 1.0)


class L1Head(MSEHead):
    """Like :class:`MSEHead` but trained with the mean absolute error (registry name ``"l1"``)."""

    name = "l1"

    def _criterion(self, outputs: Tensor, u: Tensor) -> Tensor:
        return F.l1_loss(outputs, u)
