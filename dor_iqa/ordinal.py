"""Deep ordinal regression (DOR) for quality scores, with the published maths corrected.

The normalised quality ``u`` in [0, 1] (higher = better) is cut into ``K`` equal bins.  There are
``K - 1`` thresholds at ``k / K`` for ``k = 1 .. K-1``; the head predicts ``P(y > k)`` for each one.

Corrections with respect to the published code (see :mod:`dor_iqa.seed_compat` for the original):

* class ``c = min(floor(u K), K - 1)`` and targets ``z_k = 1[c >= k]`` over ``K - 1`` thresholds, so every
  threshold can be positive and no sample is ever ignored;
* the pairwise softmax ``exp(b) / (exp(a) + exp(b))`` is evaluated as ``sigmoid(b - a)`` and the loss
  uses :func:`torch.nn.functional.binary_cross_entropy_with_logits` (no overflow, no clamp inside a log);
* the loss runs in (at least) float32 even under bf16 autocast;
* soft inference ``u = (S + 0.5) / K`` with ``S = sum_k P(y > k)`` has no half-bin offset: a perfect
  model is within half a bin of the truth.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DORHead",
    "at_least_float32",
    "autocast_disabled",
    "bin_index",
    "encode_labels",
    "encode_soft_labels",
    "hard_inference",
    "in_float32",
    "ordinal_loss",
    "reset_output_layer",
    "smoothed_logit",
    "soft_inference",
    "threshold_logits",
    "validate_num_bins",
]


def validate_num_bins(num_bins: int) -> int:
    """Check that ``num_bins`` is an integer of at least 2 and return it.

    Parameters
    ----------
    num_bins : int
        Number of ordinal bins ``K``.

    Returns
    -------
    int
        ``num_bins`` unchanged.

    Raises
    ------
    ValueError
        If ``num_bins`` is not an integer >= 2.

    Examples
    --------
    >>> validate_num_bins(28)
    28
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}; pick e.g. 28 (the paper's value).")
    return num_bins


def at_least_float32(x: Tensor) -> Tensor:
    """Promote a floating tensor to at least float32 (bf16/fp16 -> fp32; fp32 and fp64 unchanged).

    Parameters
    ----------
    x : Tensor
        Any tensor.

    Returns
    -------
    Tensor
        ``x`` in ``promote_types(x.dtype, float32)``.

    Examples
    --------
    >>> at_least_float32(torch.ones(2, dtype=torch.bfloat16)).dtype
    torch.float32
    >>> at_least_float32(torch.ones(2, dtype=torch.float64)).dtype
    torch.float64
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def autocast_disabled(x: Tensor) -> AbstractContextManager[object]:
    """Context in which autocast is off for ``x``'s device (a no-op where autocast does not exist, e.g. meta).

    Parameters
    ----------
    x : Tensor
        Tensor whose device type selects the autocast backend.

    Returns
    -------
    contextlib.AbstractContextManager
        ``torch.autocast(device_type, enabled=False)`` or a null context.

    Examples
    --------
    >>> with torch.autocast("cpu", dtype=torch.bfloat16), autocast_disabled(torch.ones(1)):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.float32
    """
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def in_float32(method: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorate a head method ``method(self, outputs, *tensors)`` (``loss`` or ``predict``) to run in at
    least float32 with autocast off.

    ``outputs`` is promoted with :func:`at_least_float32` and every further tensor argument (e.g. the
    targets ``u``) cast to the same dtype, so a head trained under bf16 autocast still computes its
    losses and inferences (logs, exponentials, sums) in float32.

    Examples
    --------
    >>> class Head(nn.Module):
    ...     @in_float32
    ...     def loss(self, outputs, u):
    ...         return (outputs - u).square().mean()
    >>> Head().loss(torch.ones(2, dtype=torch.bfloat16), torch.zeros(2)).dtype
    torch.float32
    """

    @functools.wraps(method)
    def wrapper(self: nn.Module, outputs: Tensor, *tensors: Tensor) -> Tensor:
        outputs = at_least_float32(outputs)
        with autocast_disabled(outputs):
            return method(self, outputs, *(t.to(outputs.dtype) for t in tensors))

    return wrapper


def smoothed_logit(count: Tensor, total: Tensor | float) -> Tensor:
    """Log-odds of the fraction ``(count + 0.5) / (total + 1)``: finite even when ``count`` is 0 or ``total``.

    Used by the heads' ``init_prior`` to start a threshold at the training fraction above it (the
    half-count keeps an empty or full threshold at a finite logit).

    Examples
    --------
    >>> smoothed_logit(torch.tensor([0.0, 5.0, 10.0]), 10.0)
    tensor([-3.0445,  0.0000,  3.0445])
    """
    fraction = (count + 0.5) / (total + 1.0)
    return torch.logit(fraction)


@torch.no_grad()
def reset_output_layer(linear: nn.Linear, bias: Tensor) -> None:
    """Start an output layer at the data: weights zero, bias ``bias``, so every input gets the prior.

    With zero weights the first prediction is the training targets' location whatever the features;
    the gradient with respect to the weights is not zero (it is the features times the error), so
    the layer and everything before it learn from the first step.
    """
    linear.weight.zero_()
    linear.bias.copy_(bias.to(linear.bias.dtype))


def bin_index(u: Tensor, num_bins: int) -> Tensor:
    """Ordinal class ``c = min(floor(u K), K - 1)`` of each normalised score (``u`` clamped to [0, 1]).

    Parameters
    ----------
    u : Tensor, shape (B,)
        Normalised quality in [0, 1], higher = better.
    num_bins : int
        Number of bins ``K`` (>= 2).

    Returns
    -------
    Tensor, shape (B,)
        Integer classes (int64) in ``0 .. K-1``; ``k / K`` exactly belongs to class ``k``.

    Examples
    --------
    >>> bin_index(torch.tensor([0.0, 0.2499, 0.25, 1.0]), num_bins=4)
    tensor([0, 0, 1, 3])
    """
    validate_num_bins(num_bins)
    u = at_least_float32(u).clamp(0.0, 1.0)
    return torch.floor(u * num_bins).clamp(max=num_bins - 1).long()


def encode_labels(u: Tensor, num_bins: int) -> Tensor:
    """Hard ordinal targets ``z_k = 1[c >= k]`` with ``c = min(floor(u K), K - 1)``, ``k = 1 .. K-1``.

    ``u`` is clamped to [0, 1] first.  ``u = 0`` gives all zeros, ``u = 1`` all ones, and ``u`` exactly on
    a bin boundary ``k / K`` belongs to class ``k``.

    Parameters
    ----------
    u : Tensor, shape (B,)
        Normalised quality in [0, 1], higher = better.
    num_bins : int
        Number of bins ``K`` (>= 2).

    Returns
    -------
    Tensor, shape (B, K-1)
        0/1 targets in ``u``'s dtype promoted to at least float32.

    Examples
    --------
    >>> encode_labels(torch.tensor([0.0, 0.25, 0.6, 1.0]), num_bins=4)
    tensor([[0., 0., 0.],
            [1., 0., 0.],
            [1., 1., 0.],
            [1., 1., 1.]])
    """
    dtype = torch.promote_types(u.dtype, torch.float32)
    c = bin_index(u, num_bins)
    return (c.unsqueeze(-1) >= torch.arange(1, num_bins, device=u.device)).to(dtype)


def encode_soft_labels(u: Tensor, num_bins: int) -> Tensor:
    """Soft ordinal targets ``z_k = clip(u K - k + 0.5, 0, 1)``, ``k = 1 .. K-1``.

    Soft inference of these targets, ``(sum_k z_k + 0.5) / K``, returns ``u`` exactly for
    ``u`` in ``[0.5 / K, 1 - 0.5 / K]`` (and the nearest end of that interval outside it).

    Parameters
    ----------
    u : Tensor, shape (B,)
        Normalised quality in [0, 1], higher = better (clamped to [0, 1]).
    num_bins : int
        Number of bins ``K`` (>= 2).

    Returns
    -------
    Tensor, shape (B, K-1)
        Targets in [0, 1], dtype of ``u`` promoted to at least float32.

    Examples
    --------
    >>> encode_soft_labels(torch.tensor([0.0, 0.5, 0.6]), num_bins=4)
    tensor([[0.0000, 0.0000, 0.0000],
            [1.0000, 0.5000, 0.0000],
            [1.0000, 0.9000, 0.0000]])
    >>> soft_inference(encode_soft_labels(torch.tensor([0.6]), num_bins=4))
    tensor([0.6000])
    """
    validate_num_bins(num_bins)
    u = at_least_float32(u).clamp(0.0, 1.0)
    k = torch.arange(1, num_bins, device=u.device, dtype=u.dtype)
    return (u.unsqueeze(-1) * num_bins - k + 0.5).clamp(0.0, 1.0)


def threshold_logits(outputs: Tensor) -> Tensor:
    """Turn the paper's pairwise layout ``[B, 2(K-1)]`` into threshold logits ``[B, K-1]``.

    Pairs are interleaved: the ``j``-th pair ``(l[2j], l[2j+1])``, ``j = 0 .. K-2``, belongs to threshold
    ``k = j + 1``, and ``P(y > k) = exp(l[2j+1]) / (exp(l[2j]) + exp(l[2j+1])) = sigmoid(l[2j+1] - l[2j])``.
    The logit difference is returned, never an exponential.

    Parameters
    ----------
    outputs : Tensor, shape (B, 2(K-1))
        Raw head outputs.

    Returns
    -------
    Tensor, shape (B, K-1)
        Logits of ``P(y > k)``.

    Raises
    ------
    ValueError
        If the last dimension is not a positive even number.

    Examples
    --------
    >>> threshold_logits(torch.tensor([[0.0, 2.0, 1.0, -1.0]]))
    tensor([[ 2., -2.]])
    >>> torch.sigmoid(threshold_logits(torch.tensor([[1e4, -1e4]])))
    tensor([[0.]])
    """
    width = outputs.shape[-1]
    if width < 2 or width % 2:
        raise ValueError(
            f"threshold_logits expects a last dimension of 2(K-1) (a positive even number), got shape "
            f"{tuple(outputs.shape)}; build the head with Linear(in_features, 2 * (num_bins - 1))."
        )
    pairs = outputs.reshape(*outputs.shape[:-1], width // 2, 2)
    return pairs[..., 1] - pairs[..., 0]


def ordinal_loss(threshold_logits: Tensor, targets: Tensor) -> Tensor:
    """Ordinal loss: binary cross-entropy summed over thresholds, averaged over the batch.

    Computed from logits (stable for any finite logit) in at least float32 with autocast disabled,
    so bf16 autocast still yields a float32 loss.  No sample is ever ignored.

    Parameters
    ----------
    threshold_logits : Tensor, shape (B, K-1)
        Logits of ``P(y > k)`` (see :func:`threshold_logits`).
    targets : Tensor, shape (B, K-1)
        Hard or soft targets in [0, 1] (see :func:`encode_labels`, :func:`encode_soft_labels`).

    Returns
    -------
    Tensor
        Scalar loss.

    Examples
    --------
    >>> logits = torch.zeros(2, 3)
    >>> targets = encode_labels(torch.tensor([0.1, 0.9]), num_bins=4)
    >>> round(ordinal_loss(logits, targets).item(), 4)  # 3 * log(2)
    2.0794
    """
    logits = at_least_float32(threshold_logits)
    with autocast_disabled(logits):
        per_threshold = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        return per_threshold.sum(dim=-1).mean()


def soft_inference(probs: Tensor) -> Tensor:
    """Soft ordinal inference ``u = (S + 0.5) / K`` with ``S = sum_k P(y > k)`` over ``K - 1`` thresholds.

    Parameters
    ----------
    probs : Tensor, shape (B, K-1)
        ``P(y > k)`` for ``k = 1 .. K-1``.

    Returns
    -------
    Tensor, shape (B,)
        Continuous score in ``[0.5 / K, 1 - 0.5 / K]``.

    Examples
    --------
    >>> soft_inference(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.5, 0.0]]))
    tensor([0.6250, 0.5000])
    """
    num_bins = probs.shape[-1] + 1
    return (probs.sum(dim=-1) + 0.5) / num_bins


def hard_inference(probs: Tensor) -> Tensor:
    """Hard ordinal inference: centre of the bin given by the count of ``P(y > k) > 0.5``.

    Parameters
    ----------
    probs : Tensor, shape (B, K-1)
        ``P(y > k)`` for ``k = 1 .. K-1``.

    Returns
    -------
    Tensor, shape (B,)
        ``(#{k : P(y > k) > 0.5} + 0.5) / K``, in ``probs``' dtype.

    Examples
    --------
    >>> hard_inference(torch.tensor([[0.9, 0.6, 0.2], [0.4, 0.1, 0.0]]))
    tensor([0.6250, 0.1250])
    """
    num_bins = probs.shape[-1] + 1
    return ((probs > 0.5).sum(dim=-1).to(probs.dtype) + 0.5) / num_bins


class DORHead(nn.Module):
    """Corrected deep-ordinal-regression head (registry name ``"dor"``).

    A linear layer produces ``2(K-1)`` logits in the paper's interleaved pairwise layout; threshold
    ``k = j + 1`` has ``P(y > k) = sigmoid(l[2j+1] - l[2j])`` (see :func:`threshold_logits`).  Predictions
    are the soft inference ``(S + 0.5) / K``, in ``[0.5 / K, 1 - 0.5 / K]``.  :meth:`init_prior` starts the
    thresholds at the training fractions, so the head does not spend its first epochs learning a constant.

    Parameters
    ----------
    in_features : int
        Width of the feature vector.
    num_bins : int, default 28
        Number of bins ``K`` (the paper's value).
    soft_targets : bool, default False
        Train on :func:`encode_soft_labels` instead of the hard :func:`encode_labels`.
    """

    name = "dor"

    def __init__(self, in_features: int, num_bins: int = 28, soft_targets: bool = False) -> None:
        super().__init__()
        self.num_bins = validate_num_bins(num_bins)
        self.soft_targets = bool(soft_targets)
        self.linear = nn.Linear(in_features, 2 * (num_bins - 1))

    def forward(self, features: Tensor) -> Tensor:
        """Return the raw pairwise logits, shape ``(B, 2(K-1))``."""
        return self.linear(features)

    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """Ordinal loss of ``outputs`` against normalised scores ``u`` (shape ``(B,)``)."""
        encode = encode_soft_labels if self.soft_targets else encode_labels
        return ordinal_loss(threshold_logits(at_least_float32(outputs)), encode(u, self.num_bins))

    def init_prior(self, u_train: Tensor) -> None:
        """Start every threshold at the training data: ``P(y > k)`` = the fraction of ``u_train`` above it.

        The output layer's weights are zeroed and each pair's bias difference set to the smoothed
        log-odds of that fraction (:func:`smoothed_logit`), so the first soft inference is the
        training targets' mean, to within half a bin.
        """
        counts = encode_labels(u_train, self.num_bins).sum(dim=0)
        bias = torch.zeros_like(self.linear.bias, dtype=counts.dtype)
        bias[1::2] = smoothed_logit(counts, float(u_train.numel()))
        reset_output_layer(self.linear, bias)

    def predict(self, outputs: Tensor) -> Tensor:
        """Soft-inference score in [0, 1], shape ``(B,)``, at least float32."""
        return soft_inference(torch.sigmoid(threshold_logits(at_least_float32(outputs))))
