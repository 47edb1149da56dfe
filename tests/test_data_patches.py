"""Image policies, the memory-mapped image store and native-resolution patches, on generated high-res images.

Fixture images encode each pixel's coordinates (red = x mod 256, green = y mod 256,
blue = x // 256 + 4 * (y // 256)), so any patch's origin and orientation can be read off its pixels.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import benchmark.data.patch_store as patch_store
from benchmark.data import (
    DATASET_POLICIES,
    CorruptImageError,
    ImagePolicy,
    ImagePolicyError,
    MissingImagesError,
    PatchSizeError,
    ShorterSide,
    batch_test_positions,
    build_image_store,
    decode_image,
    default_policy,
    extract_patches,
    mean_over_patches,
    parse_image_policy,
    test_patch_positions,
    to_float_chw,
    train_patch_positions,
)

PATCH = 224


def coordinate_image(width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3] whose pixels encode their own (x, y)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs % 256, ys % 256, xs // 256 + 4 * (ys // 256)], axis=-1).astype(np.uint8)


def coordinates(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`coordinate_image`: (x, y) arrays of any crop of it."""
    pixels = pixels.astype(np.int64)
    return pixels[..., 0] + 256 * (pixels[..., 2] % 4), pixels[..., 1] + 256 * (pixels[..., 2] // 4)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A KonIQ-sized 1024x768 PNG, a LIVE-sized 768x512 PNG and a 1024x768 JPEG (photo-like content)."""
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(coordinate_image(1024, 768)).save(folder / "koniq.png", compress_level=1)
    Image.fromarray(coordinate_image(768, 512)).save(folder / "live.png", compress_level=1)
    photo = Image.fromarray(coordinate_image(1024, 768)).resize((64, 48)).resize((1024, 768), Image.Resampling.BICUBIC)
    photo.save(folder / "photo.jpg", quality=90)
    return pd.DataFrame({"image": [str(folder / name) for name in ("koniq.png", "live.png", "photo.jpg")]})


def file_pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_resize_policies_give_the_documented_shapes(images: pd.DataFrame, tmp_path: Path) -> None:
    expected = {
        ImagePolicy(): [(768, 1024), (512, 768), (768, 1024)],
        ImagePolicy((512, 384)): [(384, 512)] * 3,
        ImagePolicy(ShorterSide(400)): [(400, 533), (400, 600), (400, 533)],
        ImagePolicy(ShorterSide(600)): [(600, 800), (512, 768), (600, 800)],  # 768x512 is never upscaled
        ImagePolicy("imagenet"): [(256, 256)] * 3,
    }
    for policy, shapes in expected.items():
        store = build_image_store(images, policy, PATCH, cache_dir=tmp_path)
        assert [tuple(shape) for shape in store.shapes] == shapes, policy.describe()
        assert [store.image(row).shape[:2] for row in range(3)] == shapes
        assert store.nbytes == sum(height * width * 3 for height, width in shapes)
    assert len(list(tmp_path.iterdir())) == len(expected)


def test_native_patches_are_the_files_pixels_with_their_flips(images: pd.DataFrame, tmp_path: Path) -> None:
    store = build_image_store(images, ImagePolicy(), PATCH, cache_dir=tmp_path)
    for row in range(3):
        assert np.array_equal(store.image(row), file_pixels(images["image"][row]))
    positions = train_patch_positions(store.shapes, [0, 1, 0, 1], 4, PATCH, torch.Generator().manual_seed(3))
    patches = extract_patches(store, positions)
    assert patches.shape == (16, PATCH, PATCH, 3) and patches.dtype == torch.uint8
    assert positions.images.tolist() == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4
    for k in range(16):
        top, left, flip = int(positions.tops[k]), int(positions.lefts[k]), bool(positions.flips[k])
        xs, ys = coordinates(patches[k].numpy())
        columns = np.arange(left, left + PATCH)
        assert (xs == (columns[::-1] if flip else columns)).all()
        assert (ys == np.arange(top, top + PATCH)[:, None]).all()
    assert positions.flips.any() and not positions.flips.all()


def test_resized_patches_are_pixel_exact_copies_of_the_resized_image(images: pd.DataFrame, tmp_path: Path) -> None:
    store = build_image_store(images, ImagePolicy((512, 384)), PATCH, cache_dir=tmp_path)
    with Image.open(images["image"][0]) as source:
        resized = np.asarray(source.convert("RGB").resize((512, 384), Image.Resampling.BICUBIC))
    assert np.array_equal(store.image(0), resized)
    positions = batch_test_positions(store.shapes, [0], 25, PATCH)
    patches = extract_patches(store, positions).numpy()
    for k, (top, left) in enumerate(zip(positions.tops.tolist(), positions.lefts.tolist())):
        assert np.array_equal(patches[k], resized[top : top + PATCH, left : left + PATCH])


def test_training_positions_cover_every_pixel_stay_in_bounds_and_flip_half() -> None:
    height, width = 384, 512
    positions = train_patch_positions([[height, width]], [0] * 400, 1000, PATCH, torch.Generator().manual_seed(0))
    tops, lefts = positions.tops.numpy(), positions.lefts.numpy()
    assert tops.min() == 0 and tops.max() == height - PATCH and lefts.min() == 0 and lefts.max() == width - PATCH
    # 2-D difference array: +1 at each patch's top-left, -1 past its right/bottom edges, +1 past both
    diff = np.zeros((height + 1, width + 1), dtype=np.int64)
    for dy, dx, sign in ((0, 0, 1), (PATCH, 0, -1), (0, PATCH, -1), (PATCH, PATCH, 1)):
        np.add.at(diff, (tops + dy, lefts + dx), sign)
    cover = diff.cumsum(0).cumsum(1)[:height, :width]
    assert cover.min() > 0 and cover.sum() == len(tops) * PATCH * PATCH
    assert 0.49 < positions.flips.float().mean().item() < 0.51  # 400k draws, binomial sd 0.0008


def test_training_positions_follow_the_documented_draws() -> None:
    shapes = np.array([[384, 512], [512, 768], [300, 300]])
    positions = train_patch_positions(shapes, [2, 0, 1], 2, PATCH, torch.Generator().manual_seed(11))
    generator = torch.Generator().manual_seed(11)
    unit_tops = torch.rand(6, generator=generator, dtype=torch.float64)
    unit_lefts = torch.rand(6, generator=generator, dtype=torch.float64)
    flips = torch.rand(6, generator=generator) < 0.5
    free = torch.tensor([[77, 77]] * 2 + [[161, 289]] * 2 + [[289, 545]] * 2)
    assert positions.images.tolist() == [2, 2, 0, 0, 1, 1]
    assert torch.equal(positions.tops, (unit_tops * free[:, 0]).long())
    assert torch.equal(positions.lefts, (unit_lefts * free[:, 1]).long())
    assert torch.equal(positions.flips, flips)


def test_same_seed_same_patches_other_seed_other_patches(images: pd.DataFrame, tmp_path: Path) -> None:
    store = build_image_store(images, ImagePolicy((512, 384)), PATCH, cache_dir=tmp_path)

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return extract_patches(store, train_patch_positions(store.shapes, [0, 1, 2], 2, PATCH, generator))

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_test_positions_are_a_fixed_grid_centred_for_one_patch() -> None:
    tops, lefts = test_patch_positions(384, 512, PATCH, 1)
    assert (tops.tolist(), lefts.tolist()) == ([(384 - PATCH) // 2], [(512 - PATCH) // 2])
    tops, lefts = test_patch_positions(384, 512, PATCH, 25)
    assert sorted(set(tops.tolist())) == [0, 40, 80, 120, 160]
    assert sorted(set(lefts.tolist())) == [0, 72, 144, 216, 288]
    assert len(set(zip(tops.tolist(), lefts.tolist()))) == 25
    again = test_patch_positions(384, 512, PATCH, 25)
    assert torch.equal(tops, again[0]) and torch.equal(lefts, again[1])
    five = test_patch_positions(384, 512, PATCH, 5)
    assert list(zip(*[t.tolist() for t in five])) == [(0, 0), (0, 288), (80, 144), (160, 0), (160, 288)]
    for n in (2, 3, 7, 10, 26):
        tops, lefts = test_patch_positions(500, 500, PATCH, n)
        assert len(set(zip(tops.tolist(), lefts.tolist()))) == n
        assert tops.min() >= 0 and tops.max() <= 500 - PATCH and lefts.max() <= 500 - PATCH
    batch = batch_test_positions([[384, 512], [500, 500]], [1, 0], 4, PATCH)
    assert batch.images.tolist() == [1] * 4 + [0] * 4 and not batch.flips.any()
    assert batch.tops.tolist() == [0, 0, 276, 276, 0, 0, 160, 160]


def test_mean_over_patches_averages_each_images_patches(images: pd.DataFrame, tmp_path: Path) -> None:
    store = build_image_store(images, ImagePolicy(), PATCH, cache_dir=tmp_path)
    positions = batch_test_positions(store.shapes, [0, 1], 25, PATCH)
    per_patch = to_float_chw(extract_patches(store, positions)).mean(dim=(1, 2, 3))  # a stand-in model
    scores = mean_over_patches(per_patch, 25)
    for b in range(2):
        assert torch.allclose(scores[b], per_patch[b * 25 : (b + 1) * 25].mean())
    assert mean_over_patches(torch.arange(12.0).reshape(6, 2), 3).tolist() == [[2.0, 3.0], [8.0, 9.0]]
    with pytest.raises(ValueError, match="groups of 4"):
        mean_over_patches(torch.zeros(10), 4)


def test_imagenet_policy_is_the_classic_resize_and_centre_crop(images: pd.DataFrame, tmp_path: Path) -> None:
    policy = ImagePolicy("imagenet")
    assert policy.test_patches == 1
    side = round(PATCH / 0.875)
    store = build_image_store(images, policy, PATCH, cache_dir=tmp_path)
    patches = extract_patches(store, batch_test_positions(store.shapes, [0, 1, 2], policy.test_patches, PATCH))
    centre = slice((side - PATCH) // 2, (side - PATCH) // 2 + PATCH)
    for row, path in enumerate(images["image"]):
        square = decode_image(path, side)
        assert np.array_equal(store.image(row), square)
        assert np.array_equal(patches[row].numpy(), square[centre, centre])
        if path.endswith(".png"):  # no JPEG draft: the plain PIL shorter-side resize and centre square
            with Image.open(path) as source:
                width, height = source.size
                resized = source.convert("RGB").resize((round(width * side / height), side), Image.Resampling.BICUBIC)
            left = (resized.width - side) // 2
            assert np.array_equal(square, np.asarray(resized)[:, left : left + side])


def test_bundled_policy_gives_the_imagenet_pixels_on_256_images(tmp_path: Path) -> None:
    Image.fromarray(coordinate_image(256, 256)).save(tmp_path / "crop.png")
    table = pd.DataFrame({"image": [str(tmp_path / "crop.png")]})
    patches = []
    for policy in (default_policy("bundled"), ImagePolicy("imagenet")):
        store = build_image_store(table, policy, PATCH, cache_dir=tmp_path / "stores")
        patches.append(extract_patches(store, batch_test_positions(store.shapes, [0], policy.test_patches, PATCH)))
    assert patches[0].shape == (1, PATCH, PATCH, 3) and torch.equal(patches[0], patches[1])
    xs, ys = coordinates(patches[0][0].numpy())
    assert xs[0, 0] == ys[0, 0] == 16


@pytest.mark.parametrize("workers", [1, 2])
def test_store_memory_does_not_grow_with_the_number_of_images(tmp_path: Path, workers: int) -> None:
    image_bytes = 384 * 512 * 3
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(24):
        shifted = np.roll(coordinate_image(512, 384), index, axis=1)
        Image.fromarray(shifted).save(folder / f"{index}.png", compress_level=1)
    paths = [str(folder / f"{index}.png") for index in range(24)]

    def peak_while_building(count: int) -> tuple[int, patch_store.ImageStore]:
        tracemalloc.start()
        # in this process (1 worker) or its threads, where tracemalloc sees every decoded image; worker
        # processes run the same per-image code
        store = build_image_store(pd.DataFrame({"image": paths[:count]}), ImagePolicy(), PATCH,
                                  cache_dir=tmp_path / "stores", workers=workers, processes=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak, store

    # per worker, PIL's tobytes briefly holds up to two copies of one image: workers x 2 copies, whatever N
    bound = (2 * workers + 1) * image_bytes
    few_peak, _ = peak_while_building(4)
    many_peak, store = peak_while_building(24)
    assert few_peak < bound and many_peak < bound
    assert isinstance(store.pixels, np.memmap) and store.nbytes == 24 * image_bytes
    tracemalloc.start()
    checksum = sum(int(store.image(row)[100, 100, 0]) for row in range(24))
    views = [store.image(row) for row in range(24)]
    read_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert read_peak < image_bytes // 10 and all(np.shares_memory(view, store.pixels) for view in views)
    assert checksum == sum((100 - index) % 256 for index in range(24))


def test_store_is_reused_and_keyed_by_file_state(images: pd.DataFrame, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    table = pd.DataFrame({"image": [str(tmp_path / "a.png")]})
    Image.fromarray(coordinate_image(300, 260)).save(table["image"][0])
    first = build_image_store(table, ImagePolicy(), PATCH, cache_dir=tmp_path / "stores")
    with monkeypatch.context() as patched:
        patched.setattr(patch_store, "decode_at_policy", lambda *args: pytest.fail("decoded again"))
        again = build_image_store(table, ImagePolicy(test_patches=3), PATCH, cache_dir=tmp_path / "stores")
    assert again.folder == first.folder
    Image.new("RGB", (300, 260), (9, 8, 7)).save(table["image"][0])
    os.utime(table["image"][0], ns=(1, 1))
    changed = build_image_store(table, ImagePolicy(), PATCH, cache_dir=tmp_path / "stores")
    assert changed.folder != first.folder and (changed.image(0) == (9, 8, 7)).all()


def test_images_smaller_than_the_patch_are_named_before_decoding(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(coordinate_image(300, 200)).save(small)
    table = pd.DataFrame({"image": [str(small)]})
    monkeypatch.setattr(patch_store, "decode_at_policy", lambda *args: pytest.fail("decoded a too-small image"))
    for policy in (ImagePolicy(), ImagePolicy(ShorterSide(512))):
        with pytest.raises(PatchSizeError, match=r"small\.png \(300x200\)") as caught:
            build_image_store(table, policy, PATCH, cache_dir=tmp_path / "stores")
        assert caught.value.images == [str(small)] and "224x224" in str(caught.value)
    monkeypatch.undo()
    upscaled = build_image_store(table, ImagePolicy((256, 256)), PATCH, cache_dir=tmp_path / "stores")
    assert upscaled.shapes.tolist() == [[256, 256]]
    with pytest.raises(ValueError, match="patch 224 exceeds"):
        train_patch_positions([[200, 300]], [0], 1, PATCH, torch.Generator())
    with pytest.raises(ValueError, match="patch 224 exceeds"):
        batch_test_positions([[200, 300]], [0], 1, PATCH)
    assert not list((tmp_path / "stores").glob(".tmp-*"))


def test_corrupt_and_missing_images_raise_named_errors(images: pd.DataFrame, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(images["image"][1]).read_bytes()[:5000])
    table = pd.DataFrame({"image": [images["image"][0], str(truncated)]})
    with pytest.raises(CorruptImageError, match="truncated.png"):
        build_image_store(table, ImagePolicy(), PATCH, cache_dir=tmp_path / "stores", workers=2)
    assert not (tmp_path / "stores").exists() or not list((tmp_path / "stores").iterdir())
    missing = pd.DataFrame({"image": [str(tmp_path / "nowhere.png")]})
    with pytest.raises(MissingImagesError, match="nowhere.png"):
        build_image_store(missing, ImagePolicy(), PATCH, cache_dir=tmp_path / "stores")


def test_dataset_defaults_and_partial_overrides() -> None:
    assert default_policy("koniq10k") == ImagePolicy((512, 384), 1, 25)
    assert default_policy("spaq").resize == ShorterSide(512)
    assert all(default_policy(name).resize == "native" for name in ("live", "csiq", "tid2013", "kadid10k", "livec"))
    assert default_policy("my_photos") == ImagePolicy("native", 1, 25)
    assert default_policy("bundled") == ImagePolicy("native", 1, 1)
    assert set(DATASET_POLICIES) == {"koniq10k", "spaq", "live", "csiq", "tid2013", "kadid10k", "livec", "bundled"}
    koniq = default_policy("koniq10k")
    assert parse_image_policy({"train_patches": 4}, "w", koniq) == ImagePolicy((512, 384), 4, 25)
    assert parse_image_policy({"resize": {"shorter": 384}}, "w", koniq) == ImagePolicy(ShorterSide(384), 1, 25)
    assert parse_image_policy({"resize": "imagenet"}, "w", koniq).test_patches == 1
    assert parse_image_policy({"resize": "imagenet", "test_patches": 5}, "w", koniq).test_patches == 5
    assert parse_image_policy(None, "w", koniq) is koniq
    for policy in (*DATASET_POLICIES.values(), ImagePolicy("imagenet"), ImagePolicy(ShorterSide(300), 3, 7)):
        assert parse_image_policy(policy.to_mapping(), "w") == policy
    assert koniq.describe() == ("resize 512x384; train 1 random patch+flip/image/epoch; "
                                "test mean over a 5x5 grid of 25 patches")
    assert default_policy("bundled").describe().endswith("test mean over the centre patch")
    assert "shorter side to 512 (never upscaled)" in default_policy("spaq").describe()


@pytest.mark.parametrize(("mapping", "key", "shown"), [
    ({"resize": "full"}, "resize", "'full'"),
    ({"resize": [512]}, "resize", "[512]"),
    ({"resize": [512, 0]}, "resize", "[512, 0]"),
    ({"resize": {"longer": 512}}, "resize", "{'longer': 512}"),
    ({"train_patches": 0}, "train_patches", "0"),
    ({"test_patches": 2.5}, "test_patches", "2.5"),
    ({"test_patches": True}, "test_patches", "True"),
    ({"patches": 4}, "patches", "4"),
])
def test_policy_errors_name_where_the_key_the_value_and_what_is_allowed(mapping: dict, key: str, shown: str) -> None:
    with pytest.raises(ImagePolicyError) as caught:
        parse_image_policy(mapping, "grid.yaml: datasets.koniq10k.image_policy", default_policy("koniq10k"))
    message = str(caught.value)
    assert message.startswith(f"grid.yaml: datasets.koniq10k.image_policy.{key}: {shown} is not allowed; expected ")
    assert caught.value.key == key
    with pytest.raises(ImagePolicyError, match="a mapping with keys resize, train_patches, test_patches"):
        parse_image_policy([512, 384], "where")
