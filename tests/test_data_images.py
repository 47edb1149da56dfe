"""Decode-once cache and batch transforms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import benchmark.data.images as images
from benchmark.data import center_crop, decode_cache, normalize, random_crop_flip


@pytest.fixture()
def tiny_table(tmp_path: Path) -> pd.DataFrame:
    """Three small images with known pixels: split colours, a solid upscale, and a tall JPEG."""
    split = np.zeros((8, 16, 3), dtype=np.uint8)
    split[:, :8] = (255, 0, 0)
    split[:, 8:] = (0, 0, 255)
    Image.fromarray(split).save(tmp_path / "split.png")
    Image.new("RGB", (4, 4), (7, 100, 200)).save(tmp_path / "solid.bmp")
    Image.new("L", (8, 20), 128).save(tmp_path / "tall.jpg", quality=95)
    return pd.DataFrame({"image": [str(tmp_path / name) for name in ("split.png", "solid.bmp", "tall.jpg")]})


def test_decode_cache_shape_dtype_and_values(tiny_table: pd.DataFrame, tmp_path: Path) -> None:
    array = decode_cache(tiny_table, size=8, cache_dir=tmp_path / "cache")
    assert isinstance(array, np.memmap) and not array.flags.writeable
    assert array.shape == (3, 8, 8, 3) and array.dtype == np.uint8
    # 8x16 split image: shorter side already 8, centre crop keeps columns 4..11
    assert (array[0, :, :4] == (255, 0, 0)).all() and (array[0, :, 4:] == (0, 0, 255)).all()
    # 4x4 solid colour upscaled to 8x8 stays that colour; greyscale JPEG becomes RGB grey
    assert (array[1] == (7, 100, 200)).all()
    assert (np.abs(array[2].astype(int) - 128) <= 1).all()


def test_decode_cache_is_reused_and_keyed_by_file_state(
    tiny_table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = decode_cache(tiny_table, size=8, cache_dir=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    monkeypatch.setattr(images, "decode_image", lambda path, size: pytest.fail("decoded again"))
    again = decode_cache(tiny_table, size=8, cache_dir=cache)
    assert again.filename == first.filename and np.array_equal(again, first)
    monkeypatch.undo()
    solid = Path(tiny_table["image"][1])
    Image.new("RGB", (4, 4), (1, 2, 3)).save(solid)
    os.utime(solid, ns=(1, 1))
    changed = decode_cache(tiny_table, size=8, cache_dir=cache)
    assert changed.filename != first.filename and (changed[1] == (1, 2, 3)).all()
    assert decode_cache(tiny_table, size=4, cache_dir=cache).shape == (3, 4, 4, 3)


def test_decode_cache_defaults_to_the_cache_root(
    tiny_table: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "root"))
    array = decode_cache(tiny_table.iloc[:1], size=8)
    assert Path(array.filename).parent == tmp_path / "root" / "decoded"


def ramp_batch() -> torch.Tensor:
    """uint8 [2, 6, 8, 3] whose red channel encodes the column index and green the row index."""
    batch = torch.zeros(2, 6, 8, 3, dtype=torch.uint8)
    batch[..., 0] = torch.arange(8, dtype=torch.uint8)
    batch[..., 1] = torch.arange(6, dtype=torch.uint8)[:, None]
    batch[1, ..., 2] = 9
    return batch


def test_random_crop_flip_is_a_crop_or_flipped_crop_and_deterministic() -> None:
    batch = ramp_batch()
    out = random_crop_flip(batch, 4, torch.Generator().manual_seed(0))
    again = random_crop_flip(batch, 4, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 4, 4) and out.dtype == torch.float32
    assert torch.equal(out, again)
    for sample in range(2):
        cols = (out[sample, 0, 0] * 255).round().long()
        rows = (out[sample, 1, :, 0] * 255).round().long()
        step = int(cols[1] - cols[0])
        assert step in (1, -1) and torch.equal(cols, cols[0] + step * torch.arange(4))
        assert torch.equal(rows, rows[0] + torch.arange(4)) and 0 <= rows[0] <= 2
        assert 0 <= min(cols[0], cols[-1]) <= 4
    assert (out[1, 2] == 9 / 255).all() and (out[0, 2] == 0).all()


def test_random_crop_flip_draws_match_the_documented_stream() -> None:
    batch = ramp_batch()
    generator = torch.Generator().manual_seed(123)
    tops = torch.randint(0, 3, (2,), generator=generator)
    lefts = torch.randint(0, 5, (2,), generator=generator)
    flips = torch.rand(2, generator=generator) < 0.5
    out = random_crop_flip(batch, 4, torch.Generator().manual_seed(123))
    for sample in range(2):
        crop = batch[sample, tops[sample] : tops[sample] + 4, lefts[sample] : lefts[sample] + 4]
        if flips[sample]:
            crop = crop.flip(1)
        assert torch.equal(out[sample], crop.permute(2, 0, 1).float() / 255)


def test_random_crop_flip_flips_about_half_of_the_samples() -> None:
    batch = ramp_batch()[:1].expand(2000, -1, -1, -1)
    out = random_crop_flip(batch, 4, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 1] < out[:, 0, 0, 0]).float().mean().item()
    assert 0.46 < flipped < 0.54  # binomial sd 0.011


def test_center_crop_and_normalize_known_values() -> None:
    out = center_crop(ramp_batch(), 4)
    assert out.shape == (2, 3, 4, 4)
    assert ((out[0, 0, 0] * 255).round().tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert ((out[0, 1, :, 0] * 255).round().tolist()) == [1.0, 2.0, 3.0, 4.0]
    normed = normalize(torch.full((1, 3, 2, 2), 0.5), (0.5, 0.25, 1.0), (0.5, 0.25, 0.25))
    assert normed[0, :, 0, 0].tolist() == [0.0, 1.0, -2.0]
    with pytest.raises(ValueError, match="crop size 7 exceeds"):
        center_crop(ramp_batch(), 7)
    with pytest.raises(ValueError, match="uint8 batch"):
        random_crop_flip(torch.zeros(1, 3, 8, 8), 4, torch.Generator())
