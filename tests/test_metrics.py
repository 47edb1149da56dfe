"""Tests of benchmark.metrics on inputs whose metrics are known by hand."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from benchmark import metrics
from benchmark.metrics import METRIC_NAMES, MetricInputError, compute_metrics, fit_logistic, logistic_4


def test_logistic_4_midpoint_asymptotes_and_sign_of_b4() -> None:
    # At x = b3 the curve is halfway between the asymptotes; far away it reaches them.
    assert logistic_4(0.3, 5.0, 1.0, 0.3, 0.5) == pytest.approx(3.0)
    assert logistic_4(1e3, 5.0, 1.0, 0.3, 0.5) == pytest.approx(5.0)
    assert logistic_4(-1e3, 5.0, 1.0, 0.3, 0.5) == pytest.approx(1.0)
    # (5 - 1) / (1 + exp(-(1.3 - 0.3) / 0.5)) + 1 = 4 / (1 + e^-2) + 1
    expected = 4.0 / (1.0 + math.exp(-2.0)) + 1.0
    assert logistic_4(1.3, 5.0, 1.0, 0.3, 0.5) == pytest.approx(expected)
    assert logistic_4(1.3, 5.0, 1.0, 0.3, -0.5) == pytest.approx(expected)  # only |b4| is used


def test_perfect_linear_prediction() -> None:
    mos = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    m = compute_metrics(mos, 2.0 * mos)  # error = mos
    assert list(m) == list(METRIC_NAMES)
    assert m["srcc"] == pytest.approx(1.0)
    assert m["krcc"] == pytest.approx(1.0)
    assert m["plcc_raw"] == pytest.approx(1.0)
    assert m["plcc"] == pytest.approx(1.0, abs=1e-9)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 4 + 9 + 16 + 25 + 36) / 6))
    assert m["mae"] == pytest.approx(21 / 6)


def test_hand_example() -> None:
    # errors [0, 1, -1, 2]; pred ranks [1, 3, 2, 4]; one discordant pair out of 6.
    m = compute_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 6.0])
    assert m["rmse"] == pytest.approx(math.sqrt(6 / 4))
    assert m["mae"] == pytest.approx(1.0)
    assert m["srcc"] == pytest.approx(1 - 6 * 2 / (4 * (16 - 1)))  # 0.8
    assert m["krcc"] == pytest.approx((5 - 1) / 6)
    # Pearson by hand: centred mos [-1.5, -.5, .5, 1.5], centred pred [-2, 0, -1, 3]
    assert m["plcc_raw"] == pytest.approx(7.0 / math.sqrt(5.0 * 14.0))


def test_logistic_fit_recovers_monotone_nonlinear_mapping() -> None:
    x = np.linspace(-3.0, 3.0, 200)
    mos = logistic_4(x, 5.0, 1.0, 0.3, 0.5)
    fit = fit_logistic(x, mos)
    assert fit.kind == "logistic"
    assert fit.params == pytest.approx((5.0, 1.0, 0.3, 0.5), abs=1e-4)
    m = compute_metrics(mos, x)
    assert m["plcc"] == pytest.approx(1.0, abs=1e-8)
    assert m["plcc_raw"] < 0.97
    assert m["srcc"] == pytest.approx(1.0)


def test_anti_correlated_prediction_keeps_negative_sign() -> None:
    x = np.linspace(-3.0, 3.0, 100)
    mos = logistic_4(x, 5.0, 1.0, 0.0, 0.7)
    m = compute_metrics(mos, -x)
    assert m["srcc"] == pytest.approx(-1.0)
    assert m["plcc"] == pytest.approx(-1.0, abs=1e-8)


def test_failed_logistic_fit_falls_back_to_linear(monkeypatch, caplog) -> None:
    def failing_curve_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: Number of calls to function has reached maxfev")

    monkeypatch.setattr(metrics, "curve_fit", failing_curve_fit)
    pred = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    mos = 3.0 * pred + 2.0
    with caplog.at_level(logging.WARNING, logger="benchmark.metrics"):
        fit = fit_logistic(pred, mos)
    assert fit.kind == "linear"
    assert fit.params == pytest.approx((3.0, 2.0))
    assert fit(np.array([10.0])) == pytest.approx([32.0])
    assert "falling back to a linear fit" in caplog.text
    assert compute_metrics(mos, pred)["plcc"] == pytest.approx(1.0)


def test_constant_prediction_gives_nan_correlations() -> None:
    m = compute_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0])
    for key in ("srcc", "krcc", "plcc", "plcc_raw"):
        assert math.isnan(m[key]), key
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1 + 4) / 4))
    assert m["mae"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("mos", "pred", "match"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "length mismatch"),
        ([1.0, 2.0, float("nan")], [1.0, 2.0, 3.0], "MOS contain 1 non-finite"),
        ([1.0, 2.0, 3.0], [1.0, float("inf"), 3.0], "predictions contain 1 non-finite"),
        ([1.0, 2.0], [1.0, 2.0], "at least 3 samples"),
        ([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]], "must be 1-D"),
    ],
)
def test_bad_input_raises_value_error(mos, pred, match) -> None:
    with pytest.raises(MetricInputError, match=match) as info:
        compute_metrics(mos, pred)
    assert isinstance(info.value, ValueError)


def test_constant_prediction_cannot_be_fitted() -> None:
    with pytest.raises(MetricInputError, match="constant"):
        fit_logistic([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0])
