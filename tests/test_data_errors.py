"""Every bad input gives its own named error with the rows/files and what to do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from benchmark.data import (
    CorruptImageError,
    DuplicateImageError,
    ImagePolicy,
    InvalidScoreError,
    LabelFileError,
    ScoreOutOfRangeError,
    build_image_store,
    find_bad_images,
    load_custom_labels,
)


def make_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (12, 10), (40, 80, 120)).save(folder / name)


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_nan_and_non_numeric_scores_name_their_rows(tmp_path: Path) -> None:
    make_images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    csv = write_csv(tmp_path / "s.csv", ["image,score", "a.png,3.5", "b.png,NaN", "c.png,good", "d.png,"])
    with pytest.raises(InvalidScoreError) as caught:
        load_custom_labels(csv, higher_is_better=True)
    assert caught.value.rows == [1, 2, 3]
    message = str(caught.value)
    assert "row 1: 'NaN'" in message and "row 2: 'good'" in message and "row 3: ''" in message
    assert str(csv) in message


def test_duplicate_images_are_named(tmp_path: Path) -> None:
    make_images(tmp_path, ["a.png", "b.png"])
    csv = write_csv(tmp_path / "d.csv", ["image,score", "a.png,1", "b.png,2", "a.png,3"])
    with pytest.raises(DuplicateImageError) as caught:
        load_custom_labels(csv, higher_is_better=True)
    assert caught.value.images == [str((tmp_path / "a.png").absolute())]


def test_score_outside_declared_scale_names_rows_and_values(tmp_path: Path) -> None:
    make_images(tmp_path, ["a.png", "b.png", "c.png"])
    csv = write_csv(tmp_path / "r.csv", ["image,score", "a.png,1", "b.png,5.5", "c.png,-1"])
    with pytest.raises(ScoreOutOfRangeError) as caught:
        load_custom_labels(csv, higher_is_better=True, scale=(1.0, 5.0))
    assert caught.value.rows == [1, 2]
    assert "row 1: 5.5" in str(caught.value) and "[1.0, 5.0]" in str(caught.value)


def test_missing_columns_and_degenerate_scale(tmp_path: Path) -> None:
    make_images(tmp_path, ["a.png", "b.png"])
    no_score = write_csv(tmp_path / "n.csv", ["image,mos", "a.png,1"])
    with pytest.raises(LabelFileError, match=r"lacks column\(s\) \['score'\]"):
        load_custom_labels(no_score, higher_is_better=True)
    flat = write_csv(tmp_path / "f.csv", ["image,score", "a.png,2", "b.png,2"])
    with pytest.raises(LabelFileError, match="every score equals 2.0"):
        load_custom_labels(flat, higher_is_better=True)
    with pytest.raises(LabelFileError, match="lo < hi"):
        load_custom_labels(flat, higher_is_better=True, scale=(5.0, 1.0))
    empty = write_csv(tmp_path / "e.csv", ["image,score"])
    with pytest.raises(LabelFileError, match="no rows"):
        load_custom_labels(empty, higher_is_better=True)


@pytest.fixture()
def broken(tmp_path: Path) -> tuple[pd.DataFrame, Path, Path]:
    """A table with one good PNG, one truncated JPEG and one text file posing as an image."""
    good = tmp_path / "good.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(good)
    full = tmp_path / "full.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(full, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[:600])
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    labels = pd.DataFrame({"image": [str(good), str(truncated), str(fake)]})
    return labels, truncated, fake


def test_find_bad_images_lists_every_bad_file(broken: tuple[pd.DataFrame, Path, Path]) -> None:
    labels, truncated, fake = broken
    bad = find_bad_images(labels)
    assert [path for path, _ in bad] == [str(truncated), str(fake)]
    assert "truncated" in bad[0][1].lower()
    assert "UnidentifiedImageError" in bad[1][1]
    missing = pd.DataFrame({"image": [str(fake.with_name("gone.png"))]})
    assert find_bad_images(missing) == [(str(fake.with_name("gone.png")), "file not found")]


def test_image_store_names_the_corrupt_file_and_leaves_no_store(
    broken: tuple[pd.DataFrame, Path, Path], tmp_path: Path
) -> None:
    labels, truncated, fake = broken
    cut = tmp_path / "cut.jpg"  # header intact, pixels end half way: fails while the store is being written
    cut.write_bytes((tmp_path / "full.jpg").read_bytes()[:1500])
    cache = tmp_path / "cache"
    tables = [(labels.iloc[:2], truncated), (labels.iloc[[0, 2]], fake),
              (pd.DataFrame({"image": [labels["image"][0], str(cut)]}), cut)]
    for table, named in tables:
        with pytest.raises(CorruptImageError) as caught:
            build_image_store(table, ImagePolicy(), 8, cache_dir=cache)
        assert caught.value.path == str(named)
        assert str(named) in str(caught.value) and "find_bad_images" in str(caught.value)
        assert not cache.exists() or list(cache.iterdir()) == []
    assert cache.is_dir()  # the last build got as far as its temporary folder, and removed it
