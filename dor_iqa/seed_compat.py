"""The published DOR-IQA maths, reproduced faithfully (bugs included) for the ablation.

Use :mod:`dor_iqa.ordinal` for real work.  What this module reproduces on purpose:

* :func:`decode_ord` evaluates ``exp(b) / (exp(a) + exp(b))`` literally, so logits above ~88 (float32)
  overflow to ``inf / inf = nan``;
* :func:`ordinal_loss` rounds ``u (K-1)`` to a class ``c`` in ``0 .. K-1`` and targets ``1[k < c]`` for
  ``k = 0 .. K-1``: the last threshold never has a positive target; it clamps probabilities inside the
  log; with ``ignore_index=0`` it drops every class-0 sample (the worst images) from the mean, and a batch
  made only of such samples gives ``nan`` (mean of nothing);
* :func:`soft_ordinal_regression` interpolates between bin midpoints, which reduces exactly to
  ``y = min + (S + 0.5)(max - min)/(K - 1)``: a +1/2-bin bias.

The only change is that nothing is moved to CUDA by hand (the published code called ``.cuda()``):
every tensor is created on the input's device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dor_iqa.ordinal import in_float32, reset_output_layer, smoothed_logit, validate_num_bins

__all__ = ["SeedDORHead", "decode_ord", "ordinal_loss", "soft_ordinal_regression"]


def decode_ord(logits: Tensor) -> Tensor:
    """Pairwise softmax of the published code: ``P_k = exp(l[k,1]) / (exp(l[k,0]) + exp(l[k,1]))``.

    Parameters
    ----------
    logits : Tensor, shape (B, 2K)
        Raw outputs; pairs are interleaved, reshaped to ``(B, K, 2)``.

    Returns
    -------
    Tensor, shape (B, K)
        ``P(y > k)`` for ``k = 0 .. K-1``; ``nan`` where an exponential overflows (as published).

    Raises
    ------
    ValueError
        If the last dimension is not a positive even number.

    Examples
    --------
    >>> decode_ord(torch.tensor([[0.0, 0.0, 0.0, 1.0986123]]))
    tensor([[0.5000, 0.7500]])
    >>> decode_ord(torch.tensor([[0.0, 100.0]]))  # exp(100) overflows float32
    tensor([[nan]])
    """
    batch, width = logits.shape
    if width < 2 or width % 2:
        raise ValueError(
            f"decode_ord expects logits of shape (B, 2K) with an even, positive 2K; got {tuple(logits.shape)}."
        )
    pairs = torch.reshape(logits, (batch, width // 2, 2))
    numerator = torch.exp(pairs[:, :, 1])
    return numerator / (torch.exp(pairs[:, :, 0]) + numerator)


def ordinal_loss(
    probs: Tensor,
    scores: Tensor,
    num_classes: int,
    min_score: float,
    max_score: float,
    ignore_index: int | None = 0,
) -> Tensor:
    """The published ordinal loss (clamped-log binary cross-entropy over ``K`` thresholds).

    Class ``c = round((s - min) / (max - min) (num_classes - 1))`` (``torch.round``: half to even);
    targets ``z_k = 1[k < c]`` for ``k = 0 .. K-1``; per-sample loss
    ``-sum_k [z_k log(clamp(P_k, 1e-6, 1e6)) + (1 - z_k) log(clamp(1 - P_k, 1e-6, 1e6))]``;
    mean over the samples with ``c != ignore_index`` (all samples when ``ignore_index`` is None).

    Parameters
    ----------
    probs : Tensor, shape (B, K)
        ``P(y > k)`` from :func:`decode_ord`.
    scores : Tensor, shape (B,)
        Scores on ``[min_score, max_score]``.
    num_classes : int
        Number of classes used to discretise the scores (the published head uses ``K``).
    min_score, max_score : float
        Score range.
    ignore_index : int or None, default 0
        Class left out of the mean.  With the default, a batch whose samples are all class 0 gives ``nan``.

    Returns
    -------
    Tensor
        Scalar loss (``nan`` when every sample is ignored).

    Examples
    --------
    >>> probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    >>> ordinal_loss(probs, torch.tensor([1.0, 0.0]), 2, 0.0, 1.0)  # class 0 dropped: 2 log 2
    tensor(1.3863)
    >>> ordinal_loss(probs, torch.tensor([0.0, 0.1]), 2, 0.0, 1.0)  # only class 0: nothing left
    tensor(nan)
    """
    classes, targets = published_targets(scores, probs.shape[1], num_classes, min_score, max_score)
    targets = targets.to(probs.dtype)
    log_p = torch.log(torch.clamp(probs, 1e-6, 1e6))
    log_not_p = torch.log(torch.clamp(1 - probs, 1e-6, 1e6))
    per_sample = -torch.sum(targets * log_p + (1 - targets) * log_not_p, dim=1)
    if ignore_index is not None:
        per_sample = per_sample[classes != ignore_index]
    return per_sample.mean()


def published_targets(
    scores: Tensor, num_thresholds: int, num_classes: int, min_score: float, max_score: float
) -> tuple[Tensor, Tensor]:
    """Classes and 0/1 targets of the published loss: ``c = round((s - min)/(max - min)(num_classes - 1))``,
    ``z_k = 1[k < c]`` for ``k = 0 .. num_thresholds - 1`` (the last threshold is never positive).

    Examples
    --------
    >>> published_targets(torch.tensor([0.0, 0.5, 1.0]), 3, 3, 0.0, 1.0)
    (tensor([0, 1, 2]), tensor([[0., 0., 0.],
            [1., 0., 0.],
            [1., 1., 0.]]))
    """
    classes = torch.round((scores - min_score) / (max_score - min_score) * (num_classes - 1)).long()
    k = torch.arange(num_thresholds, device=scores.device)
    return classes, (k.unsqueeze(0) < classes.unsqueeze(1)).to(torch.promote_types(scores.dtype, torch.float32))


def soft_ordinal_regression(probs: Tensor, min_score: float, max_score: float, num_classes: int) -> Tensor:
    """The published soft ordinal inference (interpolation between bin midpoints).

    ``S = sum_k P_k``, ``I = floor(S)``, ``F = S - I``, ``d2c(c) = c / (num_classes - 1) (max - min) + min``,
    ``low = (d2c(I) + d2c(I+1)) / 2``, ``high = (d2c(I+1) + d2c(I+2)) / 2``, ``y = low (1 - F) + high F``.
    Because ``d2c`` is affine this equals ``min + (S + 0.5)(max - min)/(num_classes - 1)``: half a bin above
    the class value a perfect model encodes, and above ``max_score`` when ``S > num_classes - 1.5``.

    Parameters
    ----------
    probs : Tensor, shape (B, K)
        ``P(y > k)`` from :func:`decode_ord`.
    min_score, max_score : float
        Score range.
    num_classes : int
        Number of classes used by :func:`ordinal_loss`.

    Returns
    -------
    Tensor, shape (B,)
        Continuous score (not clamped).

    Examples
    --------
    >>> soft_ordinal_regression(torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]]), 0.0, 1.0, 5)  # class 2 -> 2.5/4
    tensor([0.6250])
    """
    total = probs.sum(dim=1)
    whole = torch.floor(total)
    frac = total - whole

    def discrete_to_continuous(c: Tensor) -> Tensor:
        return c / (num_classes - 1) * (max_score - min_score) + min_score

    low = (discrete_to_continuous(whole) + discrete_to_continuous(whole + 1)) / 2
    high = (discrete_to_continuous(whole + 1) + discrete_to_continuous(whole + 2)) / 2
    return low * (1 - frac) + high * frac


class SeedDORHead(nn.Module):
    """The published DOR head behind the head protocol (registry name ``"dor-seed"``).

    ``forward`` maps features to ``2K`` logits; ``loss`` is :func:`ordinal_loss` of :func:`decode_ord` with
    ``num_classes = K``; ``predict`` is :func:`soft_ordinal_regression`.  The head receives ``u`` in [0, 1]
    and maps it to ``[min_score, max_score]`` before the published loss, and maps predictions back, so the
    two range parameters cancel; they exist to reproduce the published call.

    ``loss`` is computed in at least float32 (the published code trained in float32), so overflow
    happens where it did there (logits above ~88).  It stays faithful otherwise: with
    ``ignore_index=0`` a batch whose samples are all class 0 (``u < 0.5 / (K - 1)``) returns ``nan``;
    the trainer is expected to skip non-finite losses and count them.

    ``predict`` is not clamped: the +1/2-bin bias stays visible everywhere, and a prediction above 1
    (``S > K - 1.5``, reachable because of the bias) keeps its rank (the harness clamps only MOS-scale errors).

    :meth:`init_prior` (a benchmark addition, not in the published code) starts each threshold at the
    training fraction of the published targets; ``init: default`` in a grid keeps PyTorch's init, the
    published recipe.

    Parameters
    ----------
    in_features : int
        Width of the feature vector.
    num_bins : int, default 28
        Number of thresholds ``K`` (the paper's value); the head outputs ``2K`` logits.
    min_score, max_score : float, default 0.0 and 1.0
        Score range handed to the published functions.
    ignore_index : int or None, default 0
        Class dropped from the loss (published default 0).
    """

    name = "dor-seed"

    def __init__(
        self,
        in_features: int,
        num_bins: int = 28,
        min_score: float = 0.0,
        max_score: float = 1.0,
        ignore_index: int | None = 0,
    ) -> None:
        super().__init__()
        self.num_bins = validate_num_bins(num_bins)
        if not max_score > min_score:
            raise ValueError(
                f"max_score must exceed min_score, got min_score={min_score!r}, max_score={max_score!r}."
            )
        self.min_score = float(min_score)
        self.max_score = float(max_score)
        self.ignore_index = ignore_index
        self.linear = nn.Linear(in_features, 2 * num_bins)

    def forward(self, features: Tensor) -> Tensor:
        """Return the raw pairwise logits, shape ``(B, 2K)``."""
        return self.linear(features)

    def _scores(self, u: Tensor) -> Tensor:
        return self.min_score + u * (self.max_score - self.min_score)

    @in_float32
    def loss(self, outputs: Tensor, u: Tensor) -> Tensor:
        """Published ordinal loss; ``nan`` if every sample of the batch is ignored."""
        return ordinal_loss(
            decode_ord(outputs), self._scores(u), self.num_bins, self.min_score, self.max_score, self.ignore_index
        )

    def init_prior(self, u_train: Tensor) -> None:
        """Zero the output weights and set each pair's bias difference to the smoothed log-odds of the
        training fraction of the published target ``1[k < c]``."""
        _, targets = published_targets(self._scores(u_train.double()), self.num_bins, self.num_bins,
                                       self.min_score, self.max_score)
        bias = torch.zeros_like(self.linear.bias, dtype=targets.dtype)
        bias[1::2] = smoothed_logit(targets.sum(dim=0), float(u_train.numel()))
        reset_output_layer(self.linear, bias)

    @in_float32
    def predict(self, outputs: Tensor) -> Tensor:
        """Published soft inference mapped back to the [0, 1] scale (not clamped), shape ``(B,)``."""
        y = soft_ordinal_regression(decode_ord(outputs), self.min_score, self.max_score, self.num_bins)
        return (y - self.min_score) / (self.max_score - self.min_score)
