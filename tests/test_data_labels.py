"""Label tables of the real datasets, custom CSVs, and the MOS <-> u mapping."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.data import (
    DatasetInfo,
    MissingImagesError,
    UnknownDatasetError,
    dataset_info,
    list_datasets,
    load_custom_labels,
    load_labels,
    mos_to_u,
    read_label_file,
    u_to_mos,
)

EXPECTED = {
    # name: (rows, distinct refs (None = one per image), scale, higher_is_better, first label path)
    "live": (779, 29, (0.0, 100.0), False, "LIVE/jp2k/img2.bmp"),
    "csiq": (866, 30, (0.0, 1.0), False, "CSIQ/dst_imgs/AWGN/1600.AWGN.1.png"),
    "tid2013": (3000, 25, (0.0, 9.0), True, "TID2013/distorted_images/i01_01_1.bmp"),
    "kadid10k": (10125, 81, (1.0, 5.0), True, "KADID-10k/images/I01_01_01.png"),
    "livec": (1161, None, (0.0, 100.0), True, "LIVE_Challenge/Images/101.bmp"),
    "koniq10k": (10073, None, (1.0, 5.0), True, "KonIQ-10k/1024x768/10004473376.jpg"),
    "spaq": (11125, None, (0.0, 100.0), True, "SPAQ/Dataset/TestImage/00001.jpg"),
}


def write_tiny_images(base: Path, relative: list[str]) -> None:
    """Write an 8x8 image (format from the extension) at every ``base / relative`` path."""
    for index, rel in enumerate(relative):
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (index % 256, 0, 0)).save(path)


def test_registry_lists_the_seven_real_datasets_and_bundled() -> None:
    assert list_datasets() == ["bundled", "csiq", "kadid10k", "koniq10k", "live", "livec", "spaq", "tid2013"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_label_files_parse_with_counts_scales_and_groups(name: str) -> None:
    rows, refs, scale, higher, first = EXPECTED[name]
    table = read_label_file(name)
    info = dataset_info(name)
    assert len(table) == rows == info.n_rows
    assert (info.scale_lo, info.scale_hi, info.higher_is_better) == (*scale, higher)
    assert info.synthetic == (refs is not None)
    assert list(table.columns) == ["image", "mos", "u", "ref", "distortion"]
    assert table["image"].iloc[0] == first
    assert table["ref"].nunique() == (refs if refs is not None else rows)
    assert table["u"].between(0.0, 1.0).all()
    assert (table["distortion"] == "").all() == (refs is None)
    assert table.attrs["dataset_info"] == info


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_u_runs_in_the_declared_direction(name: str) -> None:
    table = read_label_file(name)
    best, worst = table["mos"].idxmax(), table["mos"].idxmin()
    higher = EXPECTED[name][3]
    assert (table.loc[best, "u"] > table.loc[worst, "u"]) == higher


def test_live_dmos_overshoot_is_kept_in_mos_and_clamped_in_u() -> None:
    table = read_label_file("live")
    assert table["mos"].min() == pytest.approx(-2.640015016409613)
    assert table["mos"].max() == pytest.approx(111.7746935263145)
    assert table.loc[table["mos"].idxmin(), "u"] == 1.0
    assert table.loc[table["mos"].idxmax(), "u"] == 0.0
    first = table.iloc[0]  # LIVE/jp2k/img2.bmp, DMOS 15.512954...
    assert first["u"] == pytest.approx(1 - 15.512954417537026 / 100)
    assert first["ref"] == "LIVE/refimgs/studentsculpture.bmp" and first["distortion"] == "jp2k"


def test_mos_u_mapping_known_values_and_inverse() -> None:
    tid = DatasetInfo("tid2013", 0.0, 9.0, True, True, 3000)
    csiq = DatasetInfo("csiq", 0.0, 1.0, False, True, 866)
    np.testing.assert_allclose(mos_to_u([0.0, 4.5, 9.0, 10.0], tid), [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(mos_to_u([0.0, 0.25, 1.0], csiq), [1.0, 0.75, 0.0])
    np.testing.assert_allclose(u_to_mos([1.0, 0.75, 0.0], csiq), [0.0, 0.25, 1.0])
    mos = np.linspace(0.0, 9.0, 19)
    np.testing.assert_allclose(u_to_mos(mos_to_u(mos, tid), tid), mos)
    u = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(mos_to_u(u_to_mos(u, csiq), csiq), u)


@pytest.fixture(scope="module")
def live_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding LIVE/<real label paths> as tiny images."""
    parent = tmp_path_factory.mktemp("data")
    write_tiny_images(parent, read_label_file("live")["image"].tolist())
    return parent


def test_load_labels_accepts_dataset_folder_parent_and_env(
    live_parent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = load_labels("live", root=live_parent / "LIVE")
    parent = load_labels("live", root=str(live_parent))
    monkeypatch.setenv("DOR_IQA_DATA", str(live_parent))
    from_env = load_labels("live")
    expected = str((live_parent / "LIVE" / "jp2k" / "img2.bmp").absolute())
    for table in (inside, parent, from_env):
        assert len(table) == 779
        assert table["image"].iloc[0] == expected
        assert all(Path(path).is_absolute() and Path(path).is_file() for path in table["image"])
    pd.testing.assert_frame_equal(inside, from_env)
    assert inside["ref"].iloc[0] == "LIVE/refimgs/studentsculpture.bmp"


def test_missing_images_give_one_error_with_count_and_paths(live_parent: Path, tmp_path: Path) -> None:
    labels = read_label_file("live")["image"].tolist()
    root = tmp_path / "LIVE"
    keep = labels[3:]
    write_tiny_images(tmp_path, keep)
    with pytest.raises(MissingImagesError) as caught:
        load_labels("live", root=root)
    message = str(caught.value)
    assert "'live'" in message and "3 of 779 images not found" in message
    assert str(root / "jp2k" / "img2.bmp") in message
    assert "<root>/jp2k/img2.bmp" in message
    assert caught.value.missing == [str(root / PurePosixPath(p).relative_to("LIVE")) for p in labels[:3]]


def test_no_root_and_no_env_names_the_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOR_IQA_DATA", raising=False)
    with pytest.raises(MissingImagesError, match=r"1161 of 1161 images not found.*DOR_IQA_DATA"):
        load_labels("livec")


def test_unknown_dataset_lists_the_known_names() -> None:
    with pytest.raises(UnknownDatasetError, match="known datasets: bundled, csiq, kadid10k"):
        load_labels("koniq")
    with pytest.raises(UnknownDatasetError):
        dataset_info("LIVE")


def test_custom_labels_relative_paths_refs_and_observed_scale(tmp_path: Path) -> None:
    write_tiny_images(tmp_path, ["imgs/a.png", "imgs/b.png", "imgs/c.jpg"])
    csv = tmp_path / "mine.csv"
    csv.write_text("image,score,ref\nimgs/a.png,10,r1\nimgs/b.png,30,r1\nimgs/c.jpg,20,\n")
    table = load_custom_labels(csv, higher_is_better=False)
    expected = [str((tmp_path / "imgs" / name).absolute()) for name in ("a.png", "b.png", "c.jpg")]
    assert table["image"].tolist() == expected
    np.testing.assert_allclose(table["u"], [1.0, 0.0, 0.5])  # observed scale 10..30, lower is better
    assert table["ref"].tolist() == ["r1", "r1", "imgs/c.jpg"]
    info = table.attrs["dataset_info"]
    assert info == DatasetInfo("mine", 10.0, 30.0, False, True, 3)


def test_custom_labels_declared_scale_and_root(tmp_path: Path) -> None:
    write_tiny_images(tmp_path / "pics", ["x.png", "y.png"])
    csv = tmp_path / "labels" / "set.csv"
    csv.parent.mkdir()
    csv.write_text("image,score\nx.png,1\ny.png,4\n")
    table = load_custom_labels(csv, higher_is_better=True, scale=(0.0, 5.0), root=tmp_path / "pics")
    np.testing.assert_allclose(table["u"], [0.2, 0.8])
    assert table["ref"].tolist() == ["x.png", "y.png"]
    assert table["distortion"].tolist() == ["", ""]
    assert not table.attrs["dataset_info"].synthetic
    with pytest.raises(MissingImagesError, match=r"2 of 2 images not found"):
        load_custom_labels(csv, higher_is_better=True, scale=(0.0, 5.0))
