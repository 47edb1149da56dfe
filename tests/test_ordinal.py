"""Corrected DOR maths: encoding, loss, inference, numerical robustness."""

from __future__ import annotations

import math

import pytest
import torch

from dor_iqa import (
    DORHead,
    bin_index,
    encode_labels,
    encode_soft_labels,
    hard_inference,
    ordinal_loss,
    soft_inference,
    threshold_logits,
)


def softplus(x: float) -> float:
    """log(1 + e^x), i.e. -log(sigmoid(-x))."""
    return math.log1p(math.exp(x))


def test_encode_labels_ends_and_boundaries() -> None:
    u = torch.tensor([0.0, 0.2499, 0.25, 0.5, 0.74, 0.75, 0.99, 1.0])
    expected = torch.tensor(
        [
            [0, 0, 0],
            [0, 0, 0],
            [1, 0, 0],
            [1, 1, 0],
            [1, 1, 0],
            [1, 1, 1],
            [1, 1, 1],
            [1, 1, 1],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(encode_labels(u, 4), expected)
    assert torch.equal(bin_index(u, 4), torch.tensor([0, 0, 1, 2, 2, 3, 3, 3]))


def test_encode_labels_every_boundary_at_paper_k() -> None:
    k = torch.arange(29)
    u = k.float() / 28
    targets = encode_labels(u, 28)
    assert targets.shape == (29, 27)
    assert torch.equal(targets.sum(dim=1), torch.clamp(k, max=27).float())
    assert torch.equal(targets[0], torch.zeros(27)) and torch.equal(targets[-1], torch.ones(27))


def test_encode_labels_clamps_out_of_range_and_rejects_bad_k() -> None:
    assert torch.equal(encode_labels(torch.tensor([-0.3, 1.7]), 3), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="num_bins must be an integer >= 2, got 1"):
        encode_labels(torch.tensor([0.5]), 1)


def test_encode_soft_labels_hand_values_and_exact_decoding() -> None:
    soft = encode_soft_labels(torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64), 4)
    expected = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.9, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(soft, expected)
    k = 28
    u = torch.linspace(0.5 / k, 1 - 0.5 / k, 997, dtype=torch.float64)
    torch.testing.assert_close(soft_inference(encode_soft_labels(u, k)), u, rtol=0, atol=1e-12)


def test_threshold_logits_interleaved_pairs_match_pairwise_softmax() -> None:
    outputs = torch.tensor([[0.3, -1.2, 2.0, 0.5, -0.7, -0.1]], dtype=torch.float64)
    logits = threshold_logits(outputs)
    torch.testing.assert_close(logits, torch.tensor([[-1.5, -1.5, 0.6]], dtype=torch.float64))
    pairs = outputs.reshape(1, 3, 2)
    literal = pairs[..., 1].exp() / (pairs[..., 0].exp() + pairs[..., 1].exp())
    torch.testing.assert_close(torch.sigmoid(logits), literal)
    with pytest.raises(ValueError, match=r"2\(K-1\)"):
        threshold_logits(torch.zeros(2, 5))


def test_ordinal_loss_two_samples_by_hand() -> None:
    # K = 3: thresholds at 1/3 and 2/3.  u = 0.5 -> class 1 -> z = [1, 0]; u = 0.9 -> class 2 -> z = [1, 1].
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    u = torch.tensor([0.5, 0.9])
    sample0 = softplus(-0.5) + softplus(-1.0)  # -log sigmoid(0.5) - log(1 - sigmoid(-1))
    sample1 = softplus(-2.0) + softplus(-0.3)
    expected = (sample0 + sample1) / 2
    assert ordinal_loss(logits, encode_labels(u, 3)).item() == pytest.approx(expected, rel=1e-6)
    head = DORHead(4, num_bins=3)
    outputs = torch.tensor([[0.0, 0.5, 1.0, 0.0], [-1.0, 1.0, 0.2, 0.5]])  # same logit differences
    assert head.loss(outputs, u).item() == pytest.approx(expected, rel=1e-6)


def test_ordinal_loss_never_ignores_the_worst_class() -> None:
    loss = ordinal_loss(torch.zeros(2, 27), encode_labels(torch.zeros(2), 28))
    assert loss.item() == pytest.approx(27 * math.log(2), rel=1e-6)


def test_perfect_model_is_within_half_a_bin() -> None:
    k = 28
    u = torch.linspace(0, 1, 2001, dtype=torch.float64)
    probs = encode_labels(u, k)
    for decoded in (soft_inference(probs), hard_inference(probs)):
        assert (decoded - u).abs().max().item() <= 0.5 / k + 1e-12
    # a confident but finite model (logits +-12) stays within half a bin up to sigmoid(-12) per threshold
    confident = torch.sigmoid((2 * probs - 1) * 12)
    assert (soft_inference(confident) - u).abs().max().item() <= 0.5 / k + (k - 1) * 1e-5 / k


def test_hard_inference_counts_probabilities_above_half() -> None:
    probs = torch.tensor([[0.9, 0.51, 0.5, 0.1], [0.2, 0.2, 0.2, 0.2], [1.0, 1.0, 1.0, 0.7]])
    torch.testing.assert_close(hard_inference(probs), torch.tensor([2.5, 0.5, 4.5]) / 5)


def test_extreme_logits_give_finite_loss_and_gradients() -> None:
    k = 5
    head = DORHead(3, num_bins=k)
    u = torch.tensor([0.0, 1.0])
    # every threshold logit is +2e4 (P(y > k) = 1): confidently wrong for u = 0, confidently right for u = 1
    outputs = torch.tensor([[-1e4, 1e4] * (k - 1)] * 2, requires_grad=True)
    loss = head.loss(outputs, u)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(outputs.grad).all()
    assert loss.item() == pytest.approx((k - 1) * 2e4 / 2)
    assert outputs.grad.abs().max().item() == pytest.approx(0.5)


def test_bf16_autocast_on_cpu_gives_float32_loss() -> None:
    torch.manual_seed(0)
    head = DORHead(8, num_bins=6)
    x, u = torch.randn(4, 8), torch.tensor([0.1, 0.4, 0.7, 1.0])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        outputs = head(x)
        loss = head.loss(outputs, u)
        pred = head.predict(outputs)
    assert outputs.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and pred.dtype == torch.float32
    assert loss.item() == pytest.approx(head.loss(outputs.float(), u).item(), rel=1e-6)


def test_dor_head_shapes_soft_targets_and_device_agnostic() -> None:
    head = DORHead(16, num_bins=7, soft_targets=True)
    outputs = head(torch.randn(5, 16))
    assert outputs.shape == (5, 12)
    pred = head.predict(outputs)
    assert pred.shape == (5,) and ((pred >= 0.5 / 7) & (pred <= 1 - 0.5 / 7)).all()
    # soft-target loss: logits 0 everywhere -> BCE(0, z) = log 2 for every target value
    assert head.loss(torch.zeros(2, 12), torch.tensor([0.3, 0.8])).item() == pytest.approx(6 * math.log(2))
    # no tensor is created on a hard-coded device: the whole loss runs on the meta device
    meta_head = DORHead(16, num_bins=7).to("meta")
    meta_loss = meta_head.loss(torch.zeros(5, 12, device="meta"), torch.zeros(5, device="meta"))
    assert meta_loss.device.type == "meta"
