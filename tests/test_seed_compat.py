"""The published DOR maths, bugs included: hand-computed values and the documented failure modes."""

from __future__ import annotations

import math

import pytest
import torch

from dor_iqa.seed_compat import SeedDORHead, decode_ord, ordinal_loss, soft_ordinal_regression


def test_decode_ord_is_the_literal_pairwise_softmax() -> None:
    logits = torch.tensor([[0.0, math.log(3.0), 1.0, 1.0, 2.0, 0.0]], dtype=torch.float64)
    expected = torch.tensor([[0.75, 0.5, 1 / (1 + math.e**2)]], dtype=torch.float64)
    torch.testing.assert_close(decode_ord(logits), expected)
    torch.testing.assert_close(decode_ord(logits), torch.sigmoid(logits[:, 1::2] - logits[:, 0::2]))


def test_decode_ord_overflows_as_published() -> None:
    probs = decode_ord(torch.tensor([[0.0, 100.0, 0.0, 50.0]]))
    assert math.isnan(probs[0, 0].item())  # exp(100) = inf in float32: inf / inf
    assert probs[0, 1].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="even"):
        decode_ord(torch.zeros(1, 3))


def test_ordinal_loss_by_hand_with_and_without_ignore_index() -> None:
    probs = torch.tensor([[0.9, 0.6, 0.2], [0.7, 0.4, 0.1], [0.3, 0.2, 0.1]], dtype=torch.float64)
    scores = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)  # classes round(2 s) = 2, 1, 0
    loss_c2 = -(math.log(0.9) + math.log(0.6) + math.log(0.8))  # z = [1, 1, 0]
    loss_c1 = -(math.log(0.7) + math.log(0.6) + math.log(0.9))  # z = [1, 0, 0]
    loss_c0 = -(math.log(0.7) + math.log(0.8) + math.log(0.9))  # z = [0, 0, 0]
    assert ordinal_loss(probs, scores, 3, 0.0, 1.0).item() == pytest.approx((loss_c2 + loss_c1) / 2)
    assert ordinal_loss(probs, scores, 3, 0.0, 1.0, ignore_index=None).item() == pytest.approx(
        (loss_c2 + loss_c1 + loss_c0) / 3
    )


def test_ordinal_loss_uses_the_score_range_and_round_half_to_even() -> None:
    probs = torch.full((2, 3), 0.5, dtype=torch.float64)
    # range 1..5 with 3 classes: 4.0 -> 1.5 -> 2 (half to even), 2.0 -> 0.5 -> 0 (ignored)
    loss = ordinal_loss(probs, torch.tensor([4.0, 2.0], dtype=torch.float64), 3, 1.0, 5.0)
    assert loss.item() == pytest.approx(3 * math.log(2))


def test_last_threshold_is_never_positive_and_log_is_clamped() -> None:
    k = 4
    probs = torch.ones(1, k, dtype=torch.float64)  # a model certain that the best image passes every threshold
    loss = ordinal_loss(probs, torch.tensor([1.0], dtype=torch.float64), k, 0.0, 1.0)
    # classes top out at K-1 = 3, so the target of threshold 3 is 0 and log(1 - 1) is clamped to log(1e-6)
    assert loss.item() == pytest.approx(-math.log(1e-6))


def test_all_class_zero_batch_gives_nan() -> None:
    probs = torch.full((3, 28), 0.5)
    scores = torch.tensor([0.0, 0.01, 0.018])  # round(s * 27) = 0 for s < 0.5 / 27 = 0.0185
    assert math.isnan(ordinal_loss(probs, scores, 28, 0.0, 1.0).item())
    head = SeedDORHead(4)
    assert math.isnan(head.loss(torch.zeros(3, 56), scores).item())


def test_soft_ordinal_regression_by_hand() -> None:
    probs = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.3, 0.0, 0.0]], dtype=torch.float64)
    # range 1..5, 5 classes: d2c(c) = c + 1.  S = 2: low = (3 + 4) / 2 = 3.5; S = 2.3: 3.5 * 0.7 + 4.5 * 0.3
    result = soft_ordinal_regression(probs, 1.0, 5.0, 5)
    torch.testing.assert_close(result, torch.tensor([3.5, 3.8], dtype=torch.float64))


def test_soft_ordinal_regression_is_a_half_bin_biased_linear_map() -> None:
    torch.manual_seed(0)
    k, lo, hi = 28, 1.0, 5.0
    probs = torch.rand(500, k, dtype=torch.float64)
    s = probs.sum(dim=1)
    torch.testing.assert_close(soft_ordinal_regression(probs, lo, hi, k), lo + (s + 0.5) * (hi - lo) / (k - 1))
    # a perfect model of class c decodes half a bin above the class value c / (K - 1)
    c = torch.arange(k, dtype=torch.float64)
    perfect = (torch.arange(k, dtype=torch.float64).unsqueeze(0) < c.unsqueeze(1)).to(torch.float64)
    bias = soft_ordinal_regression(perfect, 0.0, 1.0, k) - c / (k - 1)
    torch.testing.assert_close(bias, torch.full((k,), 0.5 / (k - 1), dtype=torch.float64))


def test_seed_head_protocol_loss_and_unclamped_predict() -> None:
    k = 5
    head = SeedDORHead(3, num_bins=k)
    outputs = head(torch.randn(2, 3))
    assert outputs.shape == (2, 2 * k)
    u = torch.tensor([0.5, 1.0])
    expected = ordinal_loss(decode_ord(outputs), u, k, 0.0, 1.0)
    torch.testing.assert_close(head.loss(outputs, u), expected)
    # S = 2 -> 2.5 / 4; S = 5 (every threshold certain) -> 5.5 / 4: the half-bin bias passes 1, unclamped
    certain = torch.tensor([[-20.0, 20.0]] * 2 + [[20.0, -20.0]] * 3).reshape(1, 2 * k)
    all_on = torch.tensor([[-20.0, 20.0] * k])
    torch.testing.assert_close(head.predict(torch.cat([certain, all_on])), torch.tensor([0.625, 1.375]))


def test_seed_head_score_range_parameters_cancel() -> None:
    torch.manual_seed(1)
    outputs, u = torch.randn(6, 8), torch.rand(6) * 0.8 + 0.2
    unit, scaled = SeedDORHead(2, num_bins=4), SeedDORHead(2, num_bins=4, min_score=1.0, max_score=5.0)
    torch.testing.assert_close(unit.loss(outputs, u), scaled.loss(outputs, u))
    torch.testing.assert_close(unit.predict(outputs), scaled.predict(outputs))
    with pytest.raises(ValueError, match="max_score must exceed min_score"):
        SeedDORHead(2, min_score=1.0, max_score=1.0)
