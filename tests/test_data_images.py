"""Decoding through the store at the ``imagenet`` policy (shorter side + centre square) and batch transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import benchmark.data.patch_store as patch_store
from benchmark.data import ImagePolicy, build_image_store, decode_image, normalize, to_float_chw

IMAGENET = ImagePolicy("imagenet")
PATCH = 7
"""With the default crop_pct 0.875, the ``imagenet`` policy stores round(7 / 0.875) = 8 px squares."""


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


def test_imagenet_store_shape_dtype_and_values(tiny_table: pd.DataFrame, tmp_path: Path) -> None:
    store = build_image_store(tiny_table, IMAGENET, PATCH, cache_dir=tmp_path / "stores")
    assert store.shapes.tolist() == [[8, 8]] * 3
    assert isinstance(store.pixels, np.memmap) and not store.image(0).flags.writeable
    assert store.image(0).dtype == np.uint8
    # 8x16 split image: shorter side already 8, centre square keeps columns 4..11
    assert (store.image(0)[:, :4] == (255, 0, 0)).all() and (store.image(0)[:, 4:] == (0, 0, 255)).all()
    # 4x4 solid colour upscaled to 8x8 stays that colour; greyscale JPEG becomes RGB grey
    assert (store.image(1) == (7, 100, 200)).all()
    assert (np.abs(store.image(2).astype(int) - 128) <= 1).all()
    for row, path in enumerate(tiny_table["image"]):
        assert np.array_equal(store.image(row), decode_image(path, 8))


def test_imagenet_store_is_keyed_by_the_resolved_side(tiny_table: pd.DataFrame, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_image_store(tiny_table, IMAGENET, PATCH, cache_dir=tmp_path / "stores")
    with monkeypatch.context() as patched:
        patched.setattr(patch_store, "decode_at_policy", lambda *args: pytest.fail("decoded again"))
        same_side = build_image_store(tiny_table, IMAGENET, 8, cache_dir=tmp_path / "stores", crop_pct=1.0)
    assert same_side.folder == first.folder
    smaller = build_image_store(tiny_table, IMAGENET, 3, cache_dir=tmp_path / "stores")  # round(3 / 0.875) = 3
    assert smaller.folder != first.folder and smaller.shapes.tolist() == [[3, 3]] * 3


def test_store_defaults_to_the_cache_root(tiny_table: pd.DataFrame, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "root"))
    store = build_image_store(tiny_table.iloc[:1], IMAGENET, PATCH)
    assert store.folder.parent == tmp_path / "root" / "images"


def test_to_float_chw_and_normalize_known_values() -> None:
    batch = torch.zeros(2, 6, 8, 3, dtype=torch.uint8)  # red = column, green = row, blue = sample
    batch[..., 0] = torch.arange(8, dtype=torch.uint8)
    batch[..., 1] = torch.arange(6, dtype=torch.uint8)[:, None]
    batch[1, ..., 2] = 255
    out = to_float_chw(batch)
    assert out.shape == (2, 3, 6, 8) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)  # the patches' own layout: no transposing copy
    assert (out[0, 0, 0] * 255).round().tolist() == list(range(8))
    assert (out[0, 1, :, 0] * 255).round().tolist() == list(range(6))
    assert (out[1, 2] == 1.0).all() and (out[0, 2] == 0.0).all()
    normed = normalize(torch.full((1, 3, 2, 2), 0.5), (0.5, 0.25, 1.0), (0.5, 0.25, 0.25))
    assert normed[0, :, 0, 0].tolist() == [0.0, 1.0, -2.0]
