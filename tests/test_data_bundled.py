"""The embedded ``bundled`` dataset: determinism, caching, labels and leakage-free splits (tiny recipes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import benchmark.data.bundled as bundled
from benchmark.data import (
    BundledRecipe,
    RecipeError,
    build_bundled,
    cache_root,
    dataset_info,
    load_bundled,
    make_split,
)
from benchmark.data.distortions import DISTORTIONS, LEVELS
from benchmark.data.photos import PHOTO_NAMES, load_photo

TINY = BundledRecipe(
    photos=("chelsea", "coffee", "astronaut", "china"),
    crop_size=64,
    crop_positions=((0.5, 0.5),),
    distortions=("gaussian_blur", "jpeg", "gaussian_noise"),
    levels=(1, 3, 5),
)


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny recipe built twice in two cache roots, once on one thread and once on two."""
    first = build_bundled(TINY, tmp_path_factory.mktemp("cache_a"), workers=1)
    second = build_bundled(TINY, tmp_path_factory.mktemp("cache_b"), workers=2)
    return first, second


def test_default_recipe_size_and_info_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path))
    assert len(PHOTO_NAMES) == 11 and len(DISTORTIONS) == 12 and LEVELS == (1, 2, 3, 4, 5)
    info = dataset_info("bundled")
    assert info.n_rows == 11 * 3 * 10 * 5 == 1650
    assert (info.scale_lo, info.scale_hi, info.higher_is_better, info.synthetic) == (1.0, 5.0, True, True)
    assert cache_root() == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_every_photo_loads_offline_as_rgb() -> None:
    sizes = {name: load_photo(name).size for name in PHOTO_NAMES}
    assert sizes["astronaut"] == (512, 512) and sizes["chelsea"] == (451, 300)
    assert sizes["china"] == (640, 427) and sizes["grace_hopper"] == (512, 600)
    assert all(load_photo(name).mode == "RGB" for name in ("retina", "ihc", "motorcycle_left"))


def test_same_recipe_gives_identical_labels_and_pixels(tiny_builds: tuple[Path, Path]) -> None:
    first, second = tiny_builds
    assert first.name == second.name == TINY.key()
    assert (first / "labels.csv").read_bytes() == (second / "labels.csv").read_bytes()
    names = sorted(path.name for path in (first / "images").iterdir())
    assert names == sorted(path.name for path in (second / "images").iterdir())
    assert len(names) == TINY.n_rows == 36
    for name in names:
        a = np.asarray(Image.open(first / "images" / name))
        b = np.asarray(Image.open(second / "images" / name))
        assert a.shape == (64, 64, 3) and np.array_equal(a, b)


def test_labels_columns_groups_and_proxy_scale(tiny_builds: tuple[Path, Path]) -> None:
    first, _ = tiny_builds
    table = load_bundled(TINY, first.parent.parent)
    assert list(table.columns[:5]) == ["image", "mos", "u", "ref", "distortion"]
    assert {"level", "crop", "photo", "ssim", "haarpsi"} <= set(table.columns)
    assert table["image"].iloc[0] == str(first / "images" / "chelsea_c0_gaussian_blur_l1.png")
    assert sorted(table["ref"].unique()) == ["astronaut_c0", "chelsea_c0", "china_c0", "coffee_c0"]
    assert (table["ref"] == table["photo"] + "_c" + table["crop"].astype(str)).all()
    assert table["mos"].between(1.0, 5.0).all()
    np.testing.assert_allclose(table["u"], (table["mos"] - 1.0) / 4.0)
    # proxy MOS = 1 + 4 * mean(clip(ssim, 0, 1), clip(haarpsi, 0, 1)), recomputed by hand
    quality = (table["ssim"].clip(0, 1) + table["haarpsi"].clip(0, 1)) / 2
    np.testing.assert_allclose(table["mos"], 1 + 4 * quality, atol=3e-6)  # inputs rounded to 6 decimals
    # within each reference crop and distortion, a stronger level never scores higher
    for _, group in table.groupby(["ref", "distortion"]):
        assert group.sort_values("level")["mos"].is_monotonic_decreasing


def test_jpeg_images_carry_decoded_artefacts_losslessly(tiny_builds: tuple[Path, Path]) -> None:
    first, _ = tiny_builds
    jpeg = np.asarray(Image.open(first / "images" / "coffee_c0_jpeg_l5.png")).astype(int)
    blur = np.asarray(Image.open(first / "images" / "coffee_c0_gaussian_blur_l1.png")).astype(int)
    # quality 3 JPEG: 8x8 blocks are nearly flat, so the mean step inside blocks is far smaller than across them
    inside = np.abs(np.diff(jpeg, axis=1))[:, [i for i in range(63) if i % 8 != 7]].mean()
    across = np.abs(np.diff(jpeg, axis=1))[:, 7::8].mean()
    assert across > 2 * inside
    assert not np.array_equal(jpeg, blur)


def test_split_of_bundled_keeps_reference_crops_whole_over_ten_seeds(tiny_builds: tuple[Path, Path]) -> None:
    table = load_bundled(TINY, tiny_builds[0].parent.parent)
    for seed in range(10):
        parts = make_split(table, seed)
        refs = [set(part["ref"]) for part in parts.values()]
        assert sum(len(r) for r in refs) == 4 and len(set().union(*refs)) == 4
        assert sum(len(part) for part in parts.values()) == 36


def test_cached_build_is_reused_and_killed_build_leaves_nothing(
    tiny_builds: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = tiny_builds
    monkeypatch.setattr(bundled, "_build_crop", lambda task: pytest.fail("rebuilt a cached recipe"))
    assert build_bundled(TINY, first.parent.parent) == first

    def crash(task: object) -> list[dict[str, object]]:
        raise KeyboardInterrupt

    monkeypatch.setattr(bundled, "_build_crop", crash)
    with pytest.raises(KeyboardInterrupt):
        build_bundled(TINY, tmp_path, workers=1)
    assert list((tmp_path / "bundled").iterdir()) == []


def test_recipe_key_changes_with_the_recipe_and_bad_recipes_are_refused() -> None:
    assert TINY.key() == BundledRecipe(**{**TINY.__dict__}).key()
    assert TINY.key() != BundledRecipe(**{**TINY.__dict__, "seed": 1}).key()
    with pytest.raises(RecipeError, match="unknown photos/distortions/levels \\['lena', 'sepia', '6'\\]"):
        BundledRecipe(photos=("lena",), distortions=("sepia",), levels=(6,))
    with pytest.raises(RecipeError, match="crop_size >= 32"):
        BundledRecipe(crop_size=16)


def test_load_labels_bundled_uses_root_as_cache(
    tiny_builds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmark.data.datasets as datasets

    monkeypatch.setattr(datasets, "DEFAULT_RECIPE", TINY)
    root = tiny_builds[0].parent.parent
    table = datasets.load_labels("bundled", root)
    pd.testing.assert_frame_equal(table, load_bundled(TINY, root))
