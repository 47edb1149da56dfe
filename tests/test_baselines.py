"""Baseline heads: loss and prediction on known inputs, computed by hand."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from coral_pytorch.dataset import levels_from_labelbatch

from baselines.coral import CoralHead
from baselines.corn import CornHead
from baselines.emd import EMDHead
from baselines.mse import L1Head, MSEHead
from baselines.sord import SORDHead
from dor_iqa import bin_index, encode_labels


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_mse_and_l1_loss_and_unclamped_predict() -> None:
    outputs, u = torch.tensor([0.2, 0.9]), torch.tensor([0.0, 1.0])
    assert MSEHead(4).loss(outputs, u).item() == pytest.approx((0.2**2 + 0.1**2) / 2)
    assert L1Head(4).loss(outputs, u).item() == pytest.approx((0.2 + 0.1) / 2)
    beyond = torch.tensor([-0.3, -0.2, 0.5, 1.4, 1.5])  # outside [0, 1] the ranks must not tie
    torch.testing.assert_close(MSEHead(4).predict(beyond), beyond)
    assert MSEHead(4)(torch.randn(3, 4)).shape == (3,)


def test_coral_levels_match_coral_pytorch() -> None:
    torch.manual_seed(0)
    u = torch.rand(64)
    reference = levels_from_labelbatch(bin_index(u, 6), num_classes=6)
    assert torch.equal(encode_labels(u, 6), reference)


def test_coral_loss_and_predict_by_hand() -> None:
    head = CoralHead(4, num_bins=4)
    logits = torch.tensor([[2.0, 1.0, -1.0]])
    # u = 0.6 -> class 2 -> levels [1, 1, 0]
    expected = softplus(-2.0) + softplus(-1.0) + softplus(-1.0)
    assert head.loss(logits, torch.tensor([0.6])).item() == pytest.approx(expected, rel=1e-6)
    # sigmoid(1) + sigmoid(-1) = 1
    assert head.predict(logits).item() == pytest.approx((sigmoid(2.0) + 1.0 + 0.5) / 4, rel=1e-6)
    assert head(torch.randn(5, 4)).shape == (5, 3)


def test_corn_loss_and_predict_by_hand() -> None:
    head = CornHead(4, num_bins=3)
    logits = torch.tensor([[1.0, 0.5], [2.0, -1.0]])
    u = torch.tensor([0.1, 0.9])  # classes 0 and 2
    # task 0 (all samples, label y > 0): 0 and 1; task 1 (samples with y > 0, label y > 1): sample 1, label 1
    expected = (softplus(1.0) + softplus(-2.0) + softplus(1.0)) / 3
    assert head.loss(logits, u).item() == pytest.approx(expected, rel=1e-6)
    p0 = (sigmoid(1.0) + sigmoid(1.0) * sigmoid(0.5) + 0.5) / 3
    p1 = (sigmoid(2.0) + sigmoid(2.0) * sigmoid(-1.0) + 0.5) / 3
    torch.testing.assert_close(head.predict(logits), torch.tensor([p0, p1]))


def test_sord_soft_labels_loss_and_predict_by_hand() -> None:
    head = SORDHead(4, num_bins=4, alpha=1.0)
    # u = 0.5: distances to centres in bins = [-1.5, -0.5, 0.5, 1.5]
    weights = [math.exp(-(d**2)) for d in (-1.5, -0.5, 0.5, 1.5)]
    q = [w / sum(weights) for w in weights]
    torch.testing.assert_close(head.soft_labels(torch.tensor([0.5])), torch.tensor([q]))
    kl_to_uniform = sum(qi * math.log(qi / 0.25) for qi in q)
    assert head.loss(torch.zeros(1, 4), torch.tensor([0.5])).item() == pytest.approx(kl_to_uniform, rel=1e-6)
    # p = [1, 1, 2, 1] / 5 over centres [1, 3, 5, 7] / 8
    logits = torch.tensor([[0.0, 0.0, math.log(2.0), 0.0]])
    assert head.predict(logits).item() == pytest.approx((0.125 + 0.375 + 2 * 0.625 + 0.875) / 5, rel=1e-6)
    with pytest.raises(ValueError, match="'sord'.*'alpha'.*> 0"):
        SORDHead(4, alpha=0.0)


def test_emd_target_loss_and_predict_by_hand() -> None:
    head = EMDHead(4, num_bins=2, sigma=1.0)  # sigma = 1 bin = 0.5 on the u scale
    phi = NormalDist(0.0, 1.0).cdf
    # u = 0.25, edges [0, 0.5, 1] -> standardised (edge - u) / 0.5 = [-0.5, 0.5, 1.5]
    mass = [phi(0.5) - phi(-0.5), phi(1.5) - phi(0.5)]
    target = [m / sum(mass) for m in mass]
    torch.testing.assert_close(
        head.target_distribution(torch.tensor([0.25], dtype=torch.float64)),
        torch.tensor([target], dtype=torch.float64),
    )
    # u = 0.5: symmetric target [0.5, 0.5]; p = [0.25, 0.75]; CDF gap [-0.25, 0] -> mean square 0.03125
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert head.loss(logits, torch.tensor([0.5])).item() == pytest.approx(0.03125, rel=1e-6)
    assert head.predict(logits).item() == pytest.approx(0.25 * 0.25 + 0.75 * 0.75, rel=1e-6)
    with pytest.raises(ValueError, match="'emd'.*'sigma'"):
        EMDHead(4, sigma=-1.0)


@pytest.mark.parametrize("head_cls", [CoralHead, CornHead, SORDHead, EMDHead])
def test_ordinal_baselines_reject_bad_num_bins(head_cls: type) -> None:
    with pytest.raises(ValueError, match="num_bins must be an integer >= 2, got 1"):
        head_cls(4, num_bins=1)
