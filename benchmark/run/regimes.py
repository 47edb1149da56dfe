"""Model inputs of the two regimes, as batch sources for :func:`benchmark.run.training.fit`.

``frozen``: standardised cached backbone features (one vector per image). ``finetune``: images stored
once at their dataset's policy resolution; each training image gives ``train_patches`` random patches
(positions and flips drawn from a generator seeded from the cell, never from the head, so every head of a
cell sees the same patches in the same order) and each evaluated image its fixed ``test_patches``,
whose predictions are averaged into the image's score.

A source returns ``(inputs, per_image)``: the inputs of ``per_image`` consecutive patches per image.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.data import (
    ImagePolicy,
    PatchPositions,
    batch_test_positions,
    extract_patches,
    flip_patches,
    train_patch_positions,
)
from benchmark.data.cell_data import RowTable
from benchmark.factory import Preprocessing


def stacked_trunk_forward(trunks: list[nn.Sequential], features: torch.Tensor,
                          training: bool = True) -> list[torch.Tensor]:
    """The hidden activations of several :func:`~benchmark.factory.frozen_trunk` trunks on the same features, in one matrix product.

    The trunks' first layers are concatenated along their outputs, so ``T`` trunks cost one ``[B, F] x
    [F, T*H]`` product instead of ``T`` small ones; gradients flow back to each trunk's own parameters.
    In training, one dropout mask of shape ``[B, H]`` is drawn (the draw a single trunk makes) and shared
    by every trunk — each trunk sees exactly what it would see trained alone from the same seed.

    Returns
    -------
    list of Tensor
        ``[B, H]`` per trunk, in order (views of one ``[B, T*H]`` tensor).
    """
    linear, dropout = trunks[0][0], trunks[0][2]
    hidden = nn.functional.gelu(nn.functional.linear(features, torch.cat([t[0].weight for t in trunks]),
                                                     torch.cat([t[0].bias for t in trunks])))
    width = linear.out_features
    if training and dropout.p > 0:
        mask = nn.functional.dropout(torch.ones(len(features), width, device=features.device), dropout.p, True)
        hidden = (hidden.view(len(features), len(trunks), width) * mask[:, None, :]).view(len(features), -1)
    return list(hidden.split(width, dim=1))


class FeatureSource:
    """Cached features standardised with the training part's mean and standard deviation."""

    def __init__(self, features: list[np.ndarray], train_idx: np.ndarray, device: str):
        self.features = torch.from_numpy(np.concatenate(features)).float()
        train = self.features[torch.tensor(train_idx)]
        self.mean = train.mean(0)
        std = train.std(0)
        # a feature (nearly) constant on the training part must not blow up on other rows
        self.std = std.clamp_min(1e-2 * float(std.mean()) + 1e-12)
        self.features = ((self.features - self.mean) / self.std).to(device)
        self.device = device

    @property
    def num_features(self) -> int:
        """Width of the feature vectors."""
        return self.features.shape[1]

    def train_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """Features of the rows (one per image, no augmentation in the frozen regime)."""
        return self.features[torch.tensor(indices, device=self.device)], 1

    eval_inputs = train_inputs

    def eval_patches(self, indices: np.ndarray) -> int:
        """Inputs per image that :meth:`eval_inputs` gives (one feature vector)."""
        return 1

    def prefetch(self, indices: np.ndarray, train: bool = True) -> None:
        """Nothing to prepare: the features are in memory."""


class ImageSource:
    """Image stores at each dataset's policy → random training patches, fixed test patches, normalised.

    Patches are copied out of the store on the host as uint8, moved to the device, flipped and normalised
    there. :meth:`prefetch` lets a training loop announce its next batch: its positions are drawn at once
    (the generator is used in the same order as without it) and its patches copied in a background
    thread while the caller's step runs; a later call for other rows rolls the generator back first, so
    the patches every call returns never depend on whether or what was prefetched.
    """

    def __init__(self, rows: RowTable, policies: list[ImagePolicy], prep: Preprocessing, seed: int, device: str):
        self.rows = rows
        self.policies = policies
        self.stores = [prep.store(table, policy) for table, policy in zip(rows.tables, policies)]
        self.prep = prep
        self.device = device
        self.cuda = device.startswith("cuda")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patch-prefetch")
        self._pending: _Prefetched | None = None

    def restart(self) -> "ImageSource":
        """Rewind the patch stream to its seed, so the next trial draws the same patches as the first."""
        self._discard()
        self.generator.manual_seed(self.seed)
        return self

    def prefetch(self, indices: np.ndarray, train: bool = True) -> None:
        """Start preparing the inputs of the next ``train_inputs(indices)`` (``eval_inputs`` when not ``train``).

        The patch positions are drawn now, from the cell's generator, and the patches copied in a
        background thread; the matching call then only waits for that copy. At most one batch is
        prefetched (a new prefetch discards an unused one, rolling the generator back).
        """
        self._discard()
        state = self.generator.get_state() if train else None
        table, positions = self._positions(indices, train)
        copy = self._copier.submit(extract_patches, self.stores[table], positions, self.cuda, False)
        self._pending = _Prefetched(train, np.array(indices, copy=True), state, table, positions, copy)

    def _discard(self) -> None:
        """Drop an unused prefetch and give its generator draws back."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.copy.cancel()
            if pending.state is not None:
                self.generator.set_state(pending.state)

    def _positions(self, indices: np.ndarray, train: bool) -> tuple[int, PatchPositions]:
        """The table of the rows and their patch positions (training draws come from the generator)."""
        table, rows = self.rows.locate(indices)
        shapes, policy = self.stores[table].shapes, self.policies[table]
        if train:
            return table, train_patch_positions(shapes, rows, policy.train_patches, self.prep.patch, self.generator)
        return table, batch_test_positions(shapes, rows, policy.test_patches, self.prep.patch)

    def _inputs(self, indices: np.ndarray, train: bool) -> tuple[torch.Tensor, int]:
        pending = self._pending
        if pending is not None and pending.train == train and np.array_equal(pending.indices, indices):
            self._pending = None
            table, positions, patches = pending.table, pending.positions, pending.copy.result()
        else:
            self._discard()
            table, positions = self._positions(indices, train)
            patches = extract_patches(self.stores[table], positions, pin_memory=self.cuda, flip=False)
        patches = flip_patches(patches.to(self.device, non_blocking=True), positions.flips)
        return self.prep.inputs(patches, channels_last=self.cuda), positions.per_image

    def train_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """``train_patches`` random patches (and flips) per image, drawn from the cell's generator."""
        return self._inputs(indices, train=True)

    def eval_inputs(self, indices: np.ndarray) -> tuple[torch.Tensor, int]:
        """The fixed ``test_patches`` of every image."""
        return self._inputs(indices, train=False)

    def eval_patches(self, indices: np.ndarray) -> int:
        """Patches per image that :meth:`eval_inputs` gives for these rows."""
        return self.policies[self.rows.locate(indices)[0]].test_patches


@dataclass(frozen=True)
class _Prefetched:
    """A batch announced to :meth:`ImageSource.prefetch`: its rows, the generator state before its draws,
    its positions and the background copy of its patches."""

    train: bool
    indices: np.ndarray
    state: torch.Tensor | None
    table: int
    positions: PatchPositions
    copy: Future
