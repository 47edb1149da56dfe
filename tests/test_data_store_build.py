"""Store builds: parallel workers give the same pixels, a killed build resumes, header-only size checks.

Fixture images are PNGs whose pixels encode (x, y, image number), so a misplaced or torn image shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import benchmark.data.images as images_module
import benchmark.data.patch_store as patch_store
from benchmark.data import (
    ImagePolicy,
    PatchSizeError,
    ShorterSide,
    build_image_store,
    check_patch_size,
    find_bad_images,
    undersized_images,
)

COUNT, SIZE, STORED, PATCH = 40, (256, 192), (128, 96), 64
POLICY = ImagePolicy(STORED)


def numbered_image(width: int, height: int, number: int) -> np.ndarray:
    """uint8 [height, width, 3]: red = x, green = y (mod 256), blue = the image's number."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs % 256, ys % 256, np.full_like(xs, number)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """COUNT numbered 256 x 192 PNGs, listed in a label table (also saved as ``labels.csv``)."""
    folder = tmp_path_factory.mktemp("numbered")
    paths = []
    for number in range(COUNT):
        path = folder / f"{number:03d}.png"
        Image.fromarray(numbered_image(*SIZE, number)).save(path, compress_level=1)
        paths.append(str(path))
    table = pd.DataFrame({"image": paths})
    table.to_csv(folder / "labels.csv", index=False)
    return table


@pytest.fixture(scope="module")
def clean(labels: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Every image as an uninterrupted in-process build stores it, [COUNT, 96, 128, 3]."""
    store = build_image_store(labels, POLICY, PATCH, cache_dir=tmp_path_factory.mktemp("clean"), workers=1)
    return np.stack([store.image(row) for row in range(len(store))])


def stored(store: patch_store.ImageStore) -> np.ndarray:
    return np.stack([store.image(row) for row in range(len(store))])


def leftovers(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.iterdir() if path.name.startswith((".partial-", ".lock-")))


def test_clean_build_holds_each_image_resized_at_its_place(labels: pd.DataFrame, clean: np.ndarray) -> None:
    for row in (0, 17, COUNT - 1):
        with Image.open(labels["image"][row]) as source:
            expected = np.asarray(source.convert("RGB").resize(STORED, Image.Resampling.BICUBIC))
        assert np.array_equal(clean[row], expected)
        assert (clean[row][..., 2] == row).all()


@pytest.mark.parametrize(("workers", "processes"), [(2, True), (2, False), (3, True)])
def test_worker_processes_and_threads_store_the_same_pixels(labels: pd.DataFrame, clean: np.ndarray,
                                                            tmp_path: Path, workers: int, processes: bool) -> None:
    store = build_image_store(labels, POLICY, PATCH, cache_dir=tmp_path, workers=workers, processes=processes)
    assert np.array_equal(stored(store), clean)
    assert store.shapes.tolist() == [[96, 128]] * COUNT
    assert store.offsets.tolist() == [row * 96 * 128 * 3 for row in range(COUNT)]
    assert sorted(path.name for path in store.folder.iterdir()) == ["index.npy", "pixels.npy"]
    assert leftovers(tmp_path) == []


CHILD = """
import sys, time
import pandas as pd
import benchmark.data.patch_store as patch_store
from benchmark.data import ImagePolicy

patch_store.CHECKPOINT_S = 0.0          # checkpoint after every chunk
decode = patch_store.decode_at_policy


def slow(*args):                         # ~40 images x 50 ms on 2 workers: ~1 s to kill it in
    time.sleep(0.05)
    return decode(*args)


patch_store.decode_at_policy = slow      # the forked workers inherit it
patch_store.build_image_store(pd.read_csv(sys.argv[1]), ImagePolicy((128, 96)), 64, cache_dir=sys.argv[2], workers=2)
"""


def kill_mid_build(labels_csv: Path, cache: Path) -> np.ndarray:
    """Start a 2-worker build in a child process, SIGKILL its process group half-way; return its record."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(labels_csv), str(cache)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = np.zeros(0, dtype=bool)
    while time.monotonic() < deadline and child.poll() is None:
        record = next(cache.glob(".partial-*/done.npy"), None)
        if record is not None:
            try:
                done = np.load(record)
            except (OSError, ValueError, EOFError):  # replaced while read
                continue
            if done.sum() >= COUNT // 4:
                break
        time.sleep(0.02)
    assert child.poll() is None, f"the build ended before it was killed: {child.stderr.read().decode()[-2000:]}"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    time.sleep(0.2)  # orphaned workers notice their parent is gone
    assert 0 < done.sum() < COUNT
    return done


def test_a_killed_build_is_never_served_and_resumes_to_the_clean_pixels(
    labels: pd.DataFrame, clean: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "stores"
    kill_mid_build(Path(labels["image"][0]).parent / "labels.csv", cache)
    (partial,) = cache.glob(".partial-*")
    published = [path for path in cache.iterdir() if not path.name.startswith(".")]
    assert published == []  # nothing half-written is ever visible as a store
    record = np.load(partial / "done.npy")  # the last checkpoint, read after the kill

    decoded = []
    decode = patch_store.decode_at_policy
    monkeypatch.setattr(patch_store, "decode_at_policy", lambda path, *rest: decoded.append(path) or decode(path, *rest))
    store = build_image_store(labels, POLICY, PATCH, cache_dir=cache, workers=1)
    assert np.array_equal(stored(store), clean)
    assert sorted(decoded) == sorted(labels["image"][~record])  # only what the last checkpoint lacked
    assert store.folder.name == partial.name.removeprefix(".partial-")
    assert leftovers(cache) == []


def test_a_partial_build_without_a_readable_record_starts_over(labels: pd.DataFrame, clean: np.ndarray,
                                                               tmp_path: Path) -> None:
    first = build_image_store(labels, POLICY, PATCH, cache_dir=tmp_path / "a", workers=1)
    partial = tmp_path / "b" / f".partial-{first.folder.name}"
    partial.mkdir(parents=True)
    (partial / "pixels.npy").write_bytes(b"torn")
    (partial / "done.npy").write_bytes(b"\x93NUMPY torn")
    store = build_image_store(labels, POLICY, PATCH, cache_dir=tmp_path / "b", workers=2)
    assert np.array_equal(stored(store), clean)
    assert leftovers(tmp_path / "b") == []


def test_find_bad_images_in_worker_processes_keeps_table_order(labels: pd.DataFrame, tmp_path: Path) -> None:
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)).save(noise)
    broken = tmp_path / "broken.png"
    broken.write_bytes(noise.read_bytes()[:3000])  # header intact, pixel data cut short
    paths = labels["image"].tolist()
    table = pd.DataFrame({"image": paths[:5] + [str(broken)] + paths[5:9] + [str(tmp_path / "gone.png")]})
    for workers in (1, 2):
        bad = find_bad_images(table, workers=workers)
        assert [path for path, _ in bad] == [str(broken), str(tmp_path / "gone.png")]
        assert bad[1][1] == "file not found" and "truncated" in bad[0][1].lower()


def test_undersized_images_come_from_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {"tiny.png": (64, 64), "wide.png": (300, 200), "big.png": (1024, 768)}
    for name, (width, height) in sizes.items():
        Image.new("RGB", (width, height), (1, 2, 3)).save(tmp_path / name)
    table = pd.DataFrame({"image": [str(tmp_path / name) for name in sizes]})
    monkeypatch.setattr(images_module, "open_rgb", lambda *args: pytest.fail("decoded pixels"))
    monkeypatch.setattr(patch_store, "decode_at_policy", lambda *args: pytest.fail("decoded pixels"))
    monkeypatch.setenv("DOR_IQA_CACHE", str(tmp_path / "cache"))
    tiny, wide, big = table["image"]
    assert undersized_images(table, ImagePolicy(), 224) == [(tiny, (64, 64)), (wide, (300, 200))]
    assert undersized_images(table, ImagePolicy(), 64) == []
    assert undersized_images(table, ImagePolicy(ShorterSide(512)), 224) == [(tiny, (64, 64)), (wide, (300, 200))]
    assert undersized_images(table, ImagePolicy((512, 384)), 224) == []  # a fixed size upscales
    assert undersized_images(table, ImagePolicy((200, 150)), 160) == [(tiny, (200, 150)), (wide, (200, 150)),
                                                                       (big, (200, 150))]
    assert undersized_images(table, ImagePolicy("imagenet"), 224, crop_pct=0.875) == []  # 256 x 256 squares
    with pytest.raises(PatchSizeError, match=r"2 images are smaller than the 224x224 patch") as caught:
        check_patch_size(table, ImagePolicy(), 224)
    assert caught.value.images == [tiny, wide] and "tiny.png (64x64)" in str(caught.value)
    check_patch_size(table, ImagePolicy(), 64)
    assert not (tmp_path / "cache").exists()


def test_an_interrupted_build_never_records_a_bad_image_as_done(labels: pd.DataFrame, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    broken = labels.copy()
    cut = tmp_path / "cut.png"  # header intact, pixels truncated: it fails while the store is written
    cut.write_bytes(Path(labels["image"][3]).read_bytes()[:600])
    broken.loc[3, "image"] = str(cut)
    saved: list[np.ndarray] = []
    save = patch_store._save_progress
    monkeypatch.setattr(patch_store, "CHECKPOINT_S", 0.0)  # a checkpoint after every chunk

    def recording(partial: Path, done: np.ndarray) -> None:
        saved.append(done.copy())
        save(partial, done)

    monkeypatch.setattr(patch_store, "_save_progress", recording)
    with pytest.raises(patch_store.CorruptImageError, match="cut.png"):
        build_image_store(broken, POLICY, PATCH, cache_dir=tmp_path / "stores", workers=1)
    assert len(saved) > 2 and not any(done[3] for done in saved)  # a resume from any checkpoint retries it
    assert any(done[:3].all() for done in saved)
