"""The linear probe: closed-form ridge path equals scikit-learn's Ridge; penalty chosen on val SRCC."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from benchmark.run.probe import fit_probe, ridge_path


@pytest.mark.parametrize("n_train, n_features", [(40, 120), (200, 30)])  # Gram and covariance branches
def test_ridge_path_equals_sklearn_ridge(n_train, n_features):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_train + 25, n_features)) * rng.uniform(0.5, 3.0, n_features) + 2.0
    y = rng.random(n_train + 25)
    alphas = (0.01, 1.0, 300.0)
    path = ridge_path(x, y, np.arange(n_train), alphas)
    for predictions, alpha in zip(path, alphas):
        expected = Ridge(alpha=alpha).fit(x[:n_train], y[:n_train]).predict(x)
        np.testing.assert_allclose(predictions, expected, atol=1e-9)


def test_probe_selects_the_penalty_with_the_best_val_srcc():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 60))
    y = x[:, 0] + 0.8 * rng.standard_normal(400)  # one useful feature among 60 noisy ones
    train, val = np.arange(150), np.arange(150, 300)
    alphas = (0.01, 1.0, 100.0, 1e4)
    fit = fit_probe(x, y, train, val, y[val], alphas)
    path = ridge_path(x, y, train, alphas)
    scores = [spearmanr(p[val], y[val]).statistic for p in path]
    assert fit.alpha == alphas[int(np.argmax(scores))] and fit.val_srcc == pytest.approx(max(scores))
    np.testing.assert_allclose(fit.predictions, path[int(np.argmax(scores))])


def test_constant_targets_give_a_nan_score_not_an_error():
    x = np.random.default_rng(2).standard_normal((50, 5))
    fit = fit_probe(x, np.full(50, 0.7), np.arange(30), np.arange(30, 50), np.arange(20.0), (1.0, 10.0))
    assert np.isnan(fit.val_srcc) and fit.alpha == 10.0 and np.allclose(fit.predictions, 0.7)
