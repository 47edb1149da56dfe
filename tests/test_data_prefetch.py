"""The fine-tune batch source with prefetching: the patches never depend on whether or what was prefetched.

Images encode each pixel's (x, y) and their own number, so a wrong patch, flip or image shows in the inputs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import benchmark.run.regimes as regimes
from benchmark.data import ImagePolicy, extract_patches, train_patch_positions
from benchmark.factory import Preprocessing
from benchmark.data.cell_data import RowTable
from benchmark.run.regimes import ImageSource

PATCH, COUNT, BATCH = 32, 12, 4
PREP = Preprocessing(PATCH, 0.875, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
POLICY = ImagePolicy("native", train_patches=2, test_patches=4)


@pytest.fixture()
def source_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A factory of ImageSources (seed 7) over COUNT numbered 96 x 64 PNGs."""
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "cache"))
    ys, xs = np.mgrid[0:64, 0:96]
    paths = []
    for number in range(COUNT):
        pixels = np.stack([xs, ys, np.full_like(xs, number)], axis=-1).astype(np.uint8)
        paths.append(str(tmp_path / f"{number}.png"))
        Image.fromarray(pixels).save(paths[-1])
    rows = RowTable([pd.DataFrame({"image": paths})])
    return lambda: ImageSource(rows, [POLICY], PREP, seed=7, device="cpu")


def epoch_batches(seed: int) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).permutation(COUNT).reshape(-1, BATCH))


def plain_epoch(source: ImageSource, batches: list[np.ndarray]) -> list[torch.Tensor]:
    return [source.train_inputs(batch)[0] for batch in batches]


def prefetched_epoch(source: ImageSource, batches: list[np.ndarray]) -> list[torch.Tensor]:
    """What a training loop does: take a batch, announce the next, then step."""
    out = []
    for k, batch in enumerate(batches):
        out.append(source.train_inputs(batch)[0])
        if k + 1 < len(batches):
            source.prefetch(batches[k + 1])
    return out


def test_prefetching_the_next_batch_gives_the_same_patches_in_the_same_order(
    source_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, fetched = source_factory(), source_factory()
    copied_in: list[str] = []

    def recording(*args: object, **kwargs: object) -> torch.Tensor:
        copied_in.append(threading.current_thread().name)
        return extract_patches(*args, **kwargs)

    monkeypatch.setattr(regimes, "extract_patches", recording)
    for epoch in range(2):
        batches = epoch_batches(epoch)
        expected, got = plain_epoch(plain, batches), prefetched_epoch(fetched, batches)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))
        assert len({hash(t.numpy().tobytes()) for t in got}) == len(got)  # every batch has its own patches
    # per epoch: plain copies 3 batches here; prefetched copies its first here, the 2 others in the background
    threads = [name.split("_")[0] for name in copied_in]
    assert threads.count("MainThread") == 2 * (3 + 1) and threads.count("patch-prefetch") == 2 * 2
    assert torch.equal(plain.generator.get_state(), fetched.generator.get_state())
    fetched.prefetch(epoch_batches(5)[0])
    fetched.restart()  # a pending prefetch does not survive a restart
    assert all(torch.equal(a, b) for a, b in zip(plain_epoch(plain.restart(), epoch_batches(0)),
                                                 plain_epoch(fetched, epoch_batches(0))))


def test_an_unused_prefetch_gives_its_draws_back(source_factory) -> None:
    plain, fetched = source_factory(), source_factory()
    first, second, other = epoch_batches(0)[:3]
    fetched.prefetch(other)
    fetched.prefetch(first)  # replaces the unused one
    assert torch.equal(plain.train_inputs(first)[0], fetched.train_inputs(first)[0])
    fetched.prefetch(other)
    assert torch.equal(plain.eval_inputs(second)[0], fetched.eval_inputs(second)[0])  # eval asks for other rows
    assert torch.equal(plain.train_inputs(second)[0], fetched.train_inputs(second)[0])
    fetched.prefetch(first, train=False)
    inputs, per_image = fetched.eval_inputs(first)
    assert per_image == 4 and torch.equal(inputs, plain.eval_inputs(first)[0])


def test_training_inputs_are_the_flipped_patches_normalised(source_factory) -> None:
    source = source_factory()
    batch = np.array([3, 0, 11])
    positions = train_patch_positions(source.stores[0].shapes, batch, 2, PATCH, torch.Generator().manual_seed(7))
    inputs, per_image = source.train_inputs(batch)
    assert per_image == 2 and inputs.shape == (6, 3, PATCH, PATCH)
    pixels = inputs.permute(0, 2, 3, 1) * 0.25 + 0.5  # undo the normalisation: values / 255
    assert torch.allclose(pixels * 255, extract_patches(source.stores[0], positions).float(), atol=1e-3)
    x, number = (pixels[..., 0] * 255).round(), (pixels[..., 2] * 255).round()
    assert number[:, 0, 0].tolist() == [3, 3, 0, 0, 11, 11]
    for k, flip in enumerate(positions.flips.tolist()):
        left = int(positions.lefts[k])
        columns = torch.arange(left, left + PATCH, dtype=torch.float32)
        assert torch.equal(x[k, 0], columns.flip(0) if flip else columns)
    assert positions.flips.any() and not positions.flips.all()
