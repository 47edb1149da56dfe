"""The embedded ``bundled`` dataset: scenes, crops, determinism, caching, labels and leak-free splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import benchmark.data.bundled as bundled
from benchmark.data import (
    DEFAULT_RECIPE,
    BundledRecipe,
    RecipeError,
    build_bundled,
    bundled_folder,
    bundled_is_built,
    cache_root,
    dataset_info,
    load_bundled,
    make_split,
)
from benchmark.data.distortions import DISTORTIONS, LEVELS
from benchmark.data.photos import (
    PHOTO_NAMES,
    SCENES,
    SceneCrop,
    detail_scores,
    fitted_size,
    load_photo,
    most_detailed,
    photo_size,
    resize_photo,
    scene_crops,
    view_quotas,
    window_grid,
)

GRAYSCALE = ("brick", "camera", "cell", "coins", "grass", "gravel", "moon")

# 4 scenes x 2 crops (motorcycle: one per view) x 4 distortions x 3 levels = 96 images of 64 x 64
TINY = BundledRecipe(
    scenes=("chelsea", "coffee", "motorcycle", "coins"),
    crop_size=64,
    max_shorter=128,
    distortions=("gaussian_blur", "jpeg", "gaussian_noise", "desaturate"),
    levels=(1, 3, 5),
)


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny recipe built twice in two cache roots, once on one thread and once on two."""
    first = build_bundled(TINY, tmp_path_factory.mktemp("cache_a"), workers=1)
    second = build_bundled(TINY, tmp_path_factory.mktemp("cache_b"), workers=2)
    return first, second


@pytest.fixture(scope="module")
def tiny_table(tiny_builds: tuple[Path, Path]) -> pd.DataFrame:
    """Label table of the tiny recipe."""
    return load_bundled(TINY, tiny_builds[0].parent.parent)


@pytest.fixture(scope="module")
def default_crops() -> list[SceneCrop]:
    """Every crop of the default recipe (pixels cut, nothing distorted or scored)."""
    recipe = DEFAULT_RECIPE
    return [crop for scene in recipe.scenes
            for crop in scene_crops(scene, recipe.crop_size, recipe.max_shorter, recipe.crops_per_scene)]


def test_default_recipe_size_and_info_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path))
    assert len(PHOTO_NAMES) == 19 and len(DISTORTIONS) == 12 and LEVELS == (1, 2, 3, 4, 5)
    counts = DEFAULT_RECIPE.crop_counts
    assert len(counts) == len(SCENES) == 18 >= 15
    assert {scene for scene, count in counts.items() if count != 2} == {"chelsea", "coins"}
    assert counts["chelsea"] == counts["coins"] == 1
    info = dataset_info("bundled")
    assert DEFAULT_RECIPE.n_rows == info.n_rows == 34 * 10 * 5 == 1700
    assert (info.scale_lo, info.scale_hi, info.higher_is_better, info.synthetic) == (1.0, 5.0, True, True)
    assert cache_root() == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_every_photo_loads_offline_as_rgb_and_grayscale_has_equal_channels() -> None:
    sizes = {name: photo_size(name) for name in PHOTO_NAMES}
    assert sizes["astronaut"] == (512, 512) and sizes["chelsea"] == (451, 300) and sizes["coins"] == (384, 303)
    assert sizes["china"] == (640, 427) and sizes["grace_hopper"] == (512, 600)
    assert sizes["motorcycle_left"] == sizes["motorcycle_right"] == (741, 500) and sizes["retina"] == (1411, 1411)
    assert min(min(size) for size in sizes.values()) >= 256
    for name in PHOTO_NAMES:
        image = load_photo(name)
        assert image.mode == "RGB" and image.size == sizes[name]
        pixels = np.asarray(image)
        assert (name in GRAYSCALE) == (np.array_equal(pixels[..., 0], pixels[..., 1])
                                       and np.array_equal(pixels[..., 1], pixels[..., 2]))


def test_every_photo_belongs_to_exactly_one_scene() -> None:
    members = [photo for photos in SCENES.values() for photo in photos]
    assert sorted(members) == sorted(PHOTO_NAMES)
    assert SCENES["motorcycle"] == ("motorcycle_left", "motorcycle_right")
    assert all(photos == (scene,) for scene, photos in SCENES.items() if scene != "motorcycle")


def test_fitted_size_brings_the_shorter_side_down_and_never_up() -> None:
    assert fitted_size((1000, 872), 512) == ((587, 512), 512 / 872)
    assert fitted_size((550, 660), 512) == ((512, 614), 512 / 550)
    assert fitted_size((1411, 1411), 512) == ((512, 512), 512 / 1411)
    assert fitted_size((741, 500), 512) == ((741, 500), 1.0)
    resized, scale = resize_photo(load_photo("hubble_deep_field"), 512)
    assert resized.size == (587, 512) and scale == 512 / 872


def test_window_grid_is_centred_and_non_overlapping() -> None:
    assert window_grid(741, 500, 256) == [(122, 114), (122, 370)]
    assert window_grid(512, 512, 256) == [(0, 0), (0, 256), (256, 0), (256, 256)]
    assert window_grid(451, 300, 256) == [(22, 97)]
    assert window_grid(587, 512, 256) == [(0, 37), (0, 293), (256, 37), (256, 293)]
    assert window_grid(255, 512, 256) == []


def test_most_detailed_window_wins_and_ties_go_to_the_earlier_window() -> None:
    assert most_detailed(np.array([0.1, 0.3, 0.3, 0.2]), 2) == [1, 2]
    assert most_detailed(np.zeros(4), 3) == [0, 1, 2]
    assert view_quotas(2, 2) == [1, 1] and view_quotas(2, 1) == [1, 0] and view_quotas(1, 3) == [3]
    # a flat photo with a checkerboard in its right half: the right window is the one kept
    image = np.full((64, 128), 128, dtype=np.uint8)
    image[:, 64:] = np.kron(np.indices((8, 8)).sum(0) % 2, np.ones((8, 8), dtype=np.uint8)) * 255
    photo = Image.fromarray(image).convert("RGB")
    grid = window_grid(photo.width, photo.height, 64)
    assert grid == [(0, 0), (0, 64)]
    scores = detail_scores(np.asarray(photo), grid, 64)
    assert scores[1] > scores[0] > 0 and most_detailed(scores, 1) == [1]


def test_default_crops_never_overlap_within_a_photo(default_crops: list[SceneCrop]) -> None:
    assert len(default_crops) == 34
    by_photo: dict[str, list[tuple[int, int]]] = {}
    for crop in default_crops:
        assert crop.photo in SCENES[crop.scene] and crop.pixels.shape == (256, 256, 3)
        by_photo.setdefault(crop.photo, []).append((crop.top, crop.left))
    assert sorted(by_photo) == sorted(PHOTO_NAMES)
    for corners in by_photo.values():
        for index, (top, left) in enumerate(corners):
            for other_top, other_left in corners[index + 1 :]:
                assert abs(top - other_top) >= 256 or abs(left - other_left) >= 256
    motorcycle = [(crop.index, crop.photo, crop.top, crop.left)
                  for crop in default_crops if crop.scene == "motorcycle"]
    assert motorcycle == [(0, "motorcycle_left", 122, 370), (1, "motorcycle_right", 122, 114)]
    hubble = [crop for crop in default_crops if crop.scene == "hubble_deep_field"]
    resized, _ = resize_photo(load_photo("hubble_deep_field"), 512)
    for crop in hubble:
        assert crop.scale == 512 / 872
        window = np.asarray(resized)[crop.top : crop.top + 256, crop.left : crop.left + 256]
        assert np.array_equal(crop.pixels, window)


def test_default_splits_never_put_a_scene_on_two_sides(default_crops: list[SceneCrop]) -> None:
    per_crop = len(DEFAULT_RECIPE.distortions) * len(DEFAULT_RECIPE.levels)
    table = pd.DataFrame({"ref": [crop.scene for crop in default_crops for _ in range(per_crop)],
                          "photo": [crop.photo for crop in default_crops for _ in range(per_crop)]})
    assert len(table) == 1700 and table["ref"].nunique() == 18
    for seed in range(10):
        parts = make_split(table, seed)
        refs = [set(part["ref"]) for part in parts.values()]
        photos = [set(part["photo"]) for part in parts.values()]
        assert sum(len(r) for r in refs) == 18 and sum(len(p) for p in photos) == 19
        assert 3 <= len(refs[2]) <= 4 and 300 <= len(parts["test"]) <= 350


def test_same_recipe_gives_identical_labels_and_pixels(tiny_builds: tuple[Path, Path]) -> None:
    first, second = tiny_builds
    assert first.name == second.name == TINY.key()
    assert (first / "labels.csv").read_bytes() == (second / "labels.csv").read_bytes()
    names = sorted(path.name for path in (first / "images").iterdir())
    assert names == sorted(path.name for path in (second / "images").iterdir())
    assert len(names) == TINY.n_rows == 96
    for name in names:
        a = np.asarray(Image.open(first / "images" / name))
        b = np.asarray(Image.open(second / "images" / name))
        assert a.shape == (64, 64, 3) and np.array_equal(a, b)


def test_labels_columns_groups_and_proxy_scale(tiny_builds: tuple[Path, Path], tiny_table: pd.DataFrame) -> None:
    table = tiny_table
    assert list(table.columns[:5]) == ["image", "mos", "u", "ref", "distortion"]
    assert {"level", "crop", "photo", "crop_top", "crop_left", "crop_scale", "ssim", "haarpsi"} <= set(table.columns)
    assert table["image"].iloc[0] == str(tiny_builds[0] / "images" / "chelsea_c0_gaussian_blur_l1.png")
    assert sorted(table["ref"].unique()) == ["chelsea", "coffee", "coins", "motorcycle"]
    assert table.groupby("ref")["crop"].nunique().to_dict() == dict.fromkeys(TINY.scenes, 2)
    assert set(table.loc[table["ref"] == "motorcycle", "photo"]) == {"motorcycle_left", "motorcycle_right"}
    assert (table.groupby("photo")["ref"].nunique() == 1).all()
    assert table["mos"].between(1.0, 5.0).all()
    np.testing.assert_allclose(table["u"], (table["mos"] - 1.0) / 4.0)
    # proxy MOS = 1 + 4 * mean(clip(ssim, 0, 1), clip(haarpsi, 0, 1)), recomputed by hand
    quality = (table["ssim"].clip(0, 1) + table["haarpsi"].clip(0, 1)) / 2
    np.testing.assert_allclose(table["mos"], 1 + 4 * quality, atol=3e-6)  # inputs rounded to 6 decimals
    # within each crop and distortion, a stronger level never scores higher
    for _, group in table.groupby(["ref", "crop", "distortion"]):
        assert group.sort_values("level")["mos"].is_monotonic_decreasing


def test_grayscale_crops_are_rgb_with_equal_channels_at_the_recorded_position(tiny_table: pd.DataFrame) -> None:
    # desaturate leaves a grayscale crop unchanged: its image is the pristine crop, scored MOS 5
    rows = tiny_table[(tiny_table["ref"] == "coins") & (tiny_table["distortion"] == "desaturate")]
    assert len(rows) == 6
    np.testing.assert_allclose(rows["mos"], 5.0, atol=1e-5)
    resized, scale = resize_photo(load_photo("coins"), 128)
    assert resized.size == (162, 128) and (rows["crop_scale"] == round(scale, 6)).all()
    for row in rows.itertuples():
        pixels = np.asarray(Image.open(row.image))
        assert pixels.shape == (64, 64, 3)
        assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
        top, left = row.crop_top, row.crop_left
        assert np.array_equal(pixels, np.asarray(resized)[top : top + 64, left : left + 64])


def test_jpeg_images_carry_decoded_artefacts_losslessly(tiny_builds: tuple[Path, Path]) -> None:
    first, _ = tiny_builds
    jpeg = np.asarray(Image.open(first / "images" / "coffee_c0_jpeg_l5.png")).astype(int)
    blur = np.asarray(Image.open(first / "images" / "coffee_c0_gaussian_blur_l1.png")).astype(int)
    # quality 3 JPEG: 8x8 blocks are nearly flat, so the mean step inside blocks is far smaller than across them
    inside = np.abs(np.diff(jpeg, axis=1))[:, [i for i in range(63) if i % 8 != 7]].mean()
    across = np.abs(np.diff(jpeg, axis=1))[:, 7::8].mean()
    assert across > 2 * inside
    assert not np.array_equal(jpeg, blur)


def test_split_of_bundled_keeps_scenes_and_photos_whole_over_ten_seeds(tiny_table: pd.DataFrame) -> None:
    for seed in range(10):
        parts = make_split(tiny_table, seed)
        refs = [set(part["ref"]) for part in parts.values()]
        photos = [set(part["photo"]) for part in parts.values()]
        assert sum(len(r) for r in refs) == 4 and len(set().union(*refs)) == 4
        assert sum(len(p) for p in photos) == 5 and len(set().union(*photos)) == 5
        assert sum(len(part) for part in parts.values()) == 96


def test_cached_build_is_reused_and_killed_build_leaves_nothing(
    tiny_builds: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = tiny_builds
    monkeypatch.setattr(bundled, "_build_scene", lambda task: pytest.fail("rebuilt a cached recipe"))
    assert build_bundled(TINY, first.parent.parent) == first

    def crash(task: object) -> list[dict[str, object]]:
        raise KeyboardInterrupt

    monkeypatch.setattr(bundled, "_build_scene", crash)
    with pytest.raises(KeyboardInterrupt):
        build_bundled(TINY, tmp_path, workers=1)
    assert list((tmp_path / "bundled").iterdir()) == []


def test_is_built_reads_the_cache_without_building(tiny_builds: tuple[Path, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first, _ = tiny_builds
    root = first.parent.parent
    assert bundled_folder(TINY, root) == first and bundled_is_built(TINY, root)
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bundled, "_build_scene", lambda task: pytest.fail("built during a dry run"))
    assert not bundled_is_built() and not bundled_is_built(TINY, tmp_path)
    assert bundled_folder() == tmp_path / "cache" / "bundled" / DEFAULT_RECIPE.key()
    assert DEFAULT_RECIPE.n_rows == 1700 and TINY.n_rows == 4 * 2 * 4 * 3
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the cache root
    partial = tmp_path / "bundled" / TINY.key()
    (partial / "images").mkdir(parents=True)  # a folder without labels.csv is not a finished build
    assert not bundled_is_built(TINY, tmp_path)


def test_recipe_key_changes_with_the_recipe_and_bad_recipes_are_refused() -> None:
    assert TINY.key() == BundledRecipe(**{**TINY.__dict__}).key()
    assert TINY.key() != BundledRecipe(**{**TINY.__dict__, "seed": 1}).key()
    assert TINY.key() != BundledRecipe(**{**TINY.__dict__, "crops_per_scene": 1}).key()
    unknown = r"unknown scenes/distortions/levels \['lena', 'motorcycle_left', 'sepia', '6'\]"
    with pytest.raises(RecipeError, match=unknown):
        BundledRecipe(scenes=("lena", "motorcycle_left"), distortions=("sepia",), levels=(6,))
    with pytest.raises(RecipeError, match="32 <= crop_size <= max_shorter"):
        BundledRecipe(crop_size=16)
    with pytest.raises(RecipeError, match="crop_size=300, max_shorter=256"):
        BundledRecipe(crop_size=300, max_shorter=256)
    with pytest.raises(RecipeError, match="crops_per_scene >= 1"):
        BundledRecipe(crops_per_scene=0)
    with pytest.raises(RecipeError, match="twice"):
        BundledRecipe(scenes=("coins", "coins"))
    with pytest.raises(RecipeError, match=r"scenes \['chelsea', 'coins'\] are smaller than crop_size=320"):
        BundledRecipe(crop_size=320)


def test_load_labels_bundled_uses_root_as_cache(
    tiny_builds: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmark.data.datasets as datasets

    monkeypatch.setattr(datasets, "DEFAULT_RECIPE", TINY)
    root = tiny_builds[0].parent.parent
    table = datasets.load_labels("bundled", root)
    pd.testing.assert_frame_equal(table, load_bundled(TINY, root))
