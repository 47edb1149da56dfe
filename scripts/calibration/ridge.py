"""The ridge-regression grid model of the null, effects, friedman, reference_groups and cross_dataset studies.

Each simulated *cell* is one dataset, ``J`` random train/val/test splits (whole reference groups on one side)
and ridge "heads" trained on every split, one seed per split and no training noise: the corrected test's
fallback setting, with the per-split statistics correlated by real fitting on overlapping training sets
rather than by a model of it.

Features ``x ~ N(0, I)`` form a shared block and one private block per head; ``y = x·c + noise``; head ``h``
is a ridge regression on [shared, private_h]. With equal private variances swapping two heads' blocks leaves
the joint distribution unchanged, so the heads have exactly equal expected SRCC (the null) while their
predictions are strongly correlated, like heads on one backbone. An effect is injected by giving head A's
private block more signal; the true SRCC difference is then known in closed form: ``(y, prediction)`` is
bivariate normal over the population, so a fitted head's population SRCC is ``(6/pi) asin(r/2)`` with ``r``
its Pearson correlation, computed from the fitted coefficients; averaged over
:data:`TRAINING_SETS_FOR_TRUTH` training sets it gives the true difference (:class:`TrueDifference`), and
head A's private variance is solved for a target difference with brentq. With reference groups a share of
the feature variance and of the noise is common to a reference (``x = sqrt(s) u_ref + sqrt(1-s) v``), which
leaves the marginal distribution — and the closed form — unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize
from tqdm import tqdm

from benchmark.analysis.stats import rowwise_srcc

from .common import population_srcc

TRAINING_SETS_FOR_TRUTH = 500
"""Training sets averaged for a true SRCC difference (its Monte Carlo SE: ``true_delta_mc_se`` in ``summary.json``)."""


@dataclass(frozen=True)
class GridModel:
    """One simulated dataset per cell, ``n_splits`` random splits by reference, one ridge head per private block."""

    n_refs: int = 500
    images_per_ref: int = 1
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    n_splits: int = 10
    n_shared: int = 16
    n_private: int = 4
    shared_variance: float = 1.0
    private_variances: tuple[float, ...] = (0.1, 0.1)
    noise_variance: float = 0.5
    ref_feature_share: float = 0.0
    ref_noise_share: float = 0.0
    ridge_lambda: float = 1.0

    @property
    def n_heads(self) -> int:
        return len(self.private_variances)

    @property
    def n_images(self) -> int:
        return self.n_refs * self.images_per_ref

    @property
    def train_refs(self) -> int:
        return round(self.fractions[0] * self.n_refs)

    @property
    def test_refs(self) -> int:
        return round(self.fractions[2] * self.n_refs)

    @property
    def n_train(self) -> int:
        return self.train_refs * self.images_per_ref

    @property
    def n_test(self) -> int:
        return self.test_refs * self.images_per_ref

    @property
    def coefficients(self) -> np.ndarray:
        private = [np.full(self.n_private, np.sqrt(v / self.n_private)) for v in self.private_variances]
        return np.concatenate([np.full(self.n_shared, np.sqrt(self.shared_variance / self.n_shared)), *private])

    def head_columns(self, head: int) -> np.ndarray:
        start = self.n_shared + head * self.n_private
        return np.r_[0 : self.n_shared, start : start + self.n_private]


def draw_datasets(model: GridModel, n_cells: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n_cells, n_images, q)`` and labels ``(n_cells, n_images)``; images of a reference are adjacent."""
    q, m = model.coefficients.size, model.images_per_ref
    s, k = model.ref_feature_share, model.ref_noise_share
    x = np.sqrt(1.0 - s) * rng.standard_normal((n_cells, model.n_images, q))
    noise = np.sqrt(model.noise_variance * (1.0 - k)) * rng.standard_normal((n_cells, model.n_images))
    if s > 0:
        x += np.sqrt(s) * np.repeat(rng.standard_normal((n_cells, model.n_refs, q)), m, axis=1)
    if k > 0:
        noise += np.sqrt(model.noise_variance * k) * np.repeat(rng.standard_normal((n_cells, model.n_refs)), m, axis=1)
    return x, x @ model.coefficients + noise


def draw_splits(
    model: GridModel, n_cells: int, n_splits: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image indices of the training and test parts, ``(n_cells, n_splits, n_train)`` and ``(..., n_test)``.

    References are shuffled and cut train | val | test, as ``benchmark.data.splits.make_split`` does
    for equal-sized groups; the validation part is not used (no model selection in ridge).
    """
    refs = rng.permuted(np.broadcast_to(np.arange(model.n_refs), (n_cells, n_splits, model.n_refs)), axis=-1)
    images = np.arange(model.images_per_ref)

    def expand(r: np.ndarray) -> np.ndarray:
        return (r[..., None] * model.images_per_ref + images).reshape(*r.shape[:-1], -1)

    return expand(refs[..., : model.train_refs]), expand(refs[..., model.n_refs - model.test_refs :])


def ridge_heads(
    model: GridModel, x: np.ndarray, y: np.ndarray, x_new: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Closed-form ridge of every head on centred data, batched: (coefficients, predictions on ``x_new``).

    Hand-written (sklearn's Ridge solves one problem per call; this solves thousands at once, from
    one Gram matrix of all features per training set). Shapes: ``x`` (..., n, q), ``y`` (..., n, t)
    for ``t`` targets, ``x_new`` (..., m, q) -> per head (..., q_head, t) and (..., m, t) (no
    predictions without ``x_new``).
    """
    mx = x.mean(axis=-2, keepdims=True)
    my = y.mean(axis=-2, keepdims=True)
    centred = x - mx
    gram, rhs = centred.swapaxes(-1, -2) @ centred, centred.swapaxes(-1, -2) @ (y - my)
    betas, preds = [], []
    for head in range(model.n_heads):
        cols = model.head_columns(head)
        ridge = gram[..., cols[:, None], cols] + model.ridge_lambda * np.eye(cols.size)
        beta = np.linalg.solve(ridge, rhs[..., cols, :])
        betas.append(beta)
        if x_new is not None:
            preds.append((x_new - mx)[..., cols] @ beta + my)
    return betas, preds


def take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (cells, splits, k) of per-cell arrays ``a`` (cells, n[, q])."""
    if a.ndim == 2:
        return np.take_along_axis(a[:, None], idx, axis=2)
    return np.take_along_axis(a[:, None], idx[..., None], axis=2)


def simulate_cells(model: GridModel, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Test SRCC of every head on every split of ``n_cells`` simulated cells: ``(n_cells, n_splits, n_heads)``."""
    x, y = draw_datasets(model, n_cells, rng)
    train, test = draw_splits(model, n_cells, model.n_splits, rng)
    preds = ridge_heads(model, take(x, train), take(y, train)[..., None], take(x, test))[1]
    y_test = take(y, test)
    return np.stack([rowwise_srcc(y_test, p[..., 0]) for p in preds], axis=-1)


def simulate(
    model: GridModel, n_cells: int, rng: np.random.Generator, desc: str, chunk_images: int = 500_000
) -> np.ndarray:
    """:func:`simulate_cells` in chunks of about ``chunk_images`` simulated images, with a progress bar."""
    chunk = max(1, chunk_images // (model.n_images * model.n_splits))
    parts = []
    with tqdm(total=n_cells, desc=desc, unit="cell", leave=False) as bar:
        for start in range(0, n_cells, chunk):
            size = min(chunk, n_cells - start)
            parts.append(simulate_cells(model, size, rng))
            bar.update(size)
    return np.concatenate(parts)


class TrueDifference:
    """True SRCC difference (head 0 minus head 1) as a function of head 0's private variance.

    The label is ``y = y_rest + sqrt(v_A) z_A`` with ``z_A`` the (unit-variance) sum of head A's
    private features, and ridge is linear in ``y``, so for every training set the fitted
    coefficients are ``b0 + sqrt(v_A) b1``: fitted once, they give the population SRCC of both heads
    for any ``v_A`` in closed form, on the same training sets (a smooth function to solve).
    """

    def __init__(self, model: GridModel, rng: np.random.Generator, n_sets: int = TRAINING_SETS_FOR_TRUTH):
        if model.n_heads != 2:
            raise ValueError(f"true differences are defined for two heads, got {model.n_heads}")
        self.model = model
        base = replace(model, private_variances=(0.0, model.private_variances[1]))
        cols_a = model.head_columns(0)[model.n_shared :]
        fits: list[list[np.ndarray]] = [[], []]
        chunk = max(1, 1_000_000 // model.n_images)
        for start in range(0, n_sets, chunk):
            size = min(chunk, n_sets - start)
            x, y_rest = draw_datasets(base, size, rng)
            z_a = x[..., cols_a].sum(axis=-1) / np.sqrt(model.n_private)
            train = draw_splits(model, size, 1, rng)[0][:, 0]
            targets = np.stack([y_rest, z_a], axis=-1)
            x_train = np.take_along_axis(x, train[..., None], axis=1)
            betas = ridge_heads(model, x_train, np.take_along_axis(targets, train[..., None], axis=1))[0]
            for head in range(2):
                fits[head].append(betas[head])
        self.fits = [np.concatenate(f) for f in fits]  # per head: (n_sets, q_head, 2) for targets (y_rest, z_A)

    def per_set(self, var_a: float) -> np.ndarray:
        """Population SRCC difference of the two heads fitted on each training set."""
        m = replace(self.model, private_variances=(var_a, self.model.private_variances[1]))
        c = m.coefficients
        sd_y = np.sqrt(c @ c + m.noise_variance)
        srcc = []
        for head in range(2):
            beta = self.fits[head] @ np.array([1.0, np.sqrt(var_a)])
            r = beta @ c[m.head_columns(head)] / (np.linalg.norm(beta, axis=-1) * sd_y)
            srcc.append(population_srcc(r))
        return srcc[0] - srcc[1]

    def __call__(self, var_a: float) -> float:
        return float(np.mean(self.per_set(var_a)))

    def standard_error(self, var_a: float) -> float:
        """Monte Carlo standard error of the true difference at ``var_a``."""
        d = self.per_set(var_a)
        return float(d.std(ddof=1) / np.sqrt(d.size))

    def solve(self, target: float) -> float:
        """Head A's private variance giving a true difference ``target`` (>= 0)."""
        var_b = self.model.private_variances[1]
        if target == 0.0:
            return var_b  # exact by symmetry
        high = 2.0 * var_b + 0.05
        while self(high) < target:
            high *= 2.0
        return float(optimize.brentq(lambda v: self(v) - target, var_b, high, xtol=1e-10))

