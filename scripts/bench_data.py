"""Benchmark the data layer: the default ``bundled`` dataset, and native-resolution patches vs ``imagenet``.

Bundled part, in one run on this machine: the build time and size of ``bundled``; the time to build its
image store at its policy (native 256 x 256) for --patch; epoch read throughput (images/s, one thread,
shuffled batches, one uint8 training patch per image) from the store vs decoding the same files with
PIL every batch, and their ratio. Also prints the Spearman correlation between distortion level and
proxy MOS within each distortion type, and saves a histogram of the proxy MOS to
``--out/bundled_mos_hist.png``.

Patch part (--patch-images N generated 1024 x 768 JPEGs, KonIQ-like; 0 skips it): the store under the
``imagenet`` policy (the classification preprocessing: shorter side to round(patch / 0.875), centre
square; one random patch + flip per image for training, the centre patch for test) vs native-resolution
patches (the store at KonIQ's 512 x 384 policy; one random patch + flip per image for training, the mean
over 25 test patches): the decode-once build (images/s, --workers threads), one training epoch and one
test pass, each with the normalised float batch the model sees (images/s, one thread, best of 3), and
the uint8 patch rate alone (what the CPU must deliver when the GPU converts); ratios to ``imagenet``; and
the rate of decoding JPEGs per batch instead (one thread), the alternative to a store.

Usage: python scripts/bench_data.py [--out /tmp] [--cache DIR] [--workers N]
       [--patch-images 200] [--patch 224] [--skip-bundled]
(without --cache a fresh temporary cache is used, so the build is really timed, and removed at the end).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import spearmanr

from benchmark.data import (
    DEFAULT_RECIPE,
    ImagePolicy,
    ImageStore,
    batch_test_positions,
    build_image_store,
    default_policy,
    extract_patches,
    load_at_policy,
    load_bundled,
    normalize,
    to_float_chw,
    train_patch_positions,
)
from benchmark.data.patch_store import decode_at_policy
from benchmark.data.photos import PHOTO_NAMES, load_photo

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
T = TypeVar("T")


def epoch_from_files(paths: list[str], policy: ImagePolicy, patch: int, batch_size: int, seed: int) -> float:
    """Decode every image with PIL as the store holds it, in shuffled batches, one thread; return images/s."""
    order = np.random.default_rng(seed).permutation(len(paths))
    start = time.perf_counter()
    for begin in range(0, len(order), batch_size):
        indices = order[begin : begin + batch_size]
        batch = torch.from_numpy(np.stack([load_at_policy(paths[i], policy, patch) for i in indices]))
        assert batch.shape[0] == len(indices)
    return len(order) / (time.perf_counter() - start)


def koniq_like_jpegs(folder: Path, count: int) -> list[str]:
    """Write ``count`` 1024 x 768 JPEGs (quality 90) cut from the bundled photographs at shifting positions."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in PHOTO_NAMES:
        photo = load_photo(name)
        scale = 1280 / min(photo.size)
        size = (round(photo.width * scale), round(photo.height * scale))
        sources.append(photo.resize(size, Image.Resampling.BICUBIC))
    paths = []
    for index in range(count):
        photo = sources[index % len(sources)]
        step = index // len(sources)
        left, top = (37 * step) % (photo.width - 1024), (23 * step) % (photo.height - 768)
        path = folder / f"{index:05d}.jpg"
        photo.crop((left, top, left + 1024, top + 768)).save(path, quality=90)
        paths.append(str(path))
    return paths


def timed(function: Callable[..., T], *args: object) -> tuple[T, float]:
    """Result of one call and the seconds it took."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def best_of(repeats: int, function: Callable[..., object], *args: object) -> float:
    """Fewest seconds of ``repeats`` calls (a busy shared machine only ever adds time)."""
    return min(timed(function, *args)[1] for _ in range(repeats))


def store_epoch(store: ImageStore, patch: int, batch_size: int, per_image: int, train: bool,
                float_batches: bool = True) -> None:
    """One pass of the patch pipeline: seeded training patches or the fixed test patches, normalised floats
    (what a CPU model sees) or uint8 only (what the CPU must deliver when the GPU converts)."""
    generator = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0).permutation(len(store)) if train else np.arange(len(store))
    for begin in range(0, len(order), batch_size):
        rows = order[begin : begin + batch_size]
        if train:
            positions = train_patch_positions(store.shapes, rows, per_image, patch, generator)
        else:
            positions = batch_test_positions(store.shapes, rows, per_image, patch)
        patches = extract_patches(store, positions)
        if float_batches:
            normalize(to_float_chw(patches), IMAGENET_MEAN, IMAGENET_STD)


def bench_patches(cache: Path, count: int, patch: int, workers: int | None, batch_size: int) -> None:
    """Print images/s of the ``imagenet`` policy vs native-resolution patches on ``count`` KonIQ-like images."""
    torch.set_num_threads(1)
    print(f"\npatch pipeline vs imagenet preprocessing: {count} generated 1024x768 JPEGs, patch {patch}; "
          "builds use the --workers threads, passes one thread (torch too), best of 3")
    labels = pd.DataFrame({"image": koniq_like_jpegs(cache / "koniq_like", count)})
    koniq, imagenet = default_policy("koniq10k"), ImagePolicy("imagenet")
    net, net_build = timed(build_image_store, labels, imagenet, patch, cache / "images", workers)
    store, store_build = timed(build_image_store, labels, koniq, patch, cache / "images", workers)
    test_batch = max(1, batch_size // koniq.test_patches)
    rows = {  # name: (build s, train epoch s, test pass s, test patches per image, bytes); passes: best of 3
        "store imagenet": (net_build, best_of(3, store_epoch, net, patch, batch_size, 1, True),
                           best_of(3, store_epoch, net, patch, batch_size, imagenet.test_patches, False),
                           imagenet.test_patches, net.nbytes),
        "store koniq 512x384": (store_build,
                                best_of(3, store_epoch, store, patch, batch_size, koniq.train_patches, True),
                                best_of(3, store_epoch, store, patch, test_batch, koniq.test_patches, False),
                                koniq.test_patches, store.nbytes),
    }
    base = rows["store imagenet"]
    print(f"{'pipeline (float batches)':25s} {'build img/s':>11s} {'train img/s':>11s} {'test img/s':>10s} "
          f"{'test patch/s':>12s} {'disk MiB':>8s}   speed vs imagenet (build / train / test)")
    for name, (build_s, train_s, test_s, per_image, nbytes) in rows.items():
        print(f"{name:25s} {count / build_s:11,.0f} {count / train_s:11,.0f} {count / test_s:10,.0f} "
              f"{count * per_image / test_s:12,.0f} {nbytes / 2**20:8.0f}   "
              f"{base[0] / build_s:.2f} / {base[1] / train_s:.2f} / {base[2] / test_s:.2f}")
    train_u8 = count / best_of(3, store_epoch, store, patch, batch_size, koniq.train_patches, True, False)
    test_u8 = count * koniq.test_patches / best_of(3, store_epoch, store, patch, test_batch, koniq.test_patches,
                                                   False, False)
    print(f"store koniq 512x384, uint8 patches only (float conversion left to the GPU): train {train_u8:,.0f} "
          f"patch/s, test {test_u8:,.0f} patch/s")
    sample = labels["image"].tolist()[: min(count, 50)]
    _, decode_s = timed(lambda: [decode_at_policy(path, (1024, 768), (512, 384), koniq) for path in sample])
    per_batch = len(sample) / decode_s
    print(f"decoding JPEGs per batch instead of a store (one thread, 512x384): {per_batch:,.0f} img/s, "
          f"{train_u8 / per_batch:.0f}x slower than uint8 training patches from the store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp"), help="folder for the MOS histogram PNG")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: fresh temporary folder)")
    parser.add_argument("--workers", type=int, default=None, help="build threads (default: usable cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patch-images", type=int, default=200, help="generated 1024x768 images (0: skip)")
    parser.add_argument("--patch", type=int, default=224, help="patch side (the backbone's input size)")
    parser.add_argument("--skip-bundled", action="store_true", help="only the patch benchmark")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="dor-iqa-bench-"))
    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(f"cores usable: {cores}; load average before: {load:.2f}; cache: {cache}")
    if not args.skip_bundled:
        bench_bundled(args, cache)
    if args.patch_images:
        bench_patches(cache, args.patch_images, args.patch, args.workers, args.batch_size)
    if args.cache is None:
        shutil.rmtree(cache)


def bench_bundled(args: argparse.Namespace, cache: Path) -> None:
    """Build ``bundled`` and its store; compare reading the store vs per-epoch decoding; check the proxy MOS."""
    start, cpu = time.perf_counter(), time.process_time()
    labels = load_bundled(DEFAULT_RECIPE, cache, workers=args.workers)
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"bundled: {len(labels)} images, {labels['ref'].nunique()} scenes ({labels['photo'].nunique()} photos), "
          f"{labels['distortion'].nunique()} distortions; build {build_s:.1f} s wall, {build_cpu:.1f} s CPU "
          f"(load average now {os.getloadavg()[0]:.2f})")

    policy = default_policy("bundled")
    store, store_s = timed(build_image_store, labels, policy, args.patch, cache / "images", args.workers)
    print(f"bundled store ({policy.describe()}): {len(store)} images, built in {store_s:.1f} s "
          f"({store.nbytes / 2**20:.0f} MiB)")

    torch.set_num_threads(1)
    from_store = len(store) / timed(store_epoch, store, args.patch, args.batch_size, policy.train_patches, True,
                                    False)[1]
    from_files = epoch_from_files(labels["image"].tolist(), policy, args.patch, args.batch_size, seed=0)
    print(f"epoch read, one thread: store {from_store:,.0f} img/s (uint8 training patches); PIL decode "
          f"{from_files:,.0f} img/s; ratio {from_store / from_files:,.1f}x")

    print("Spearman(level, proxy MOS) within each distortion type; mean MOS per level:")
    for distortion, group in labels.groupby("distortion", sort=False):
        rho = spearmanr(group["level"], group["mos"]).statistic
        means = " ".join(f"{m:.2f}" for m in group.groupby("level")["mos"].mean())
        print(f"  {distortion:15s} rho={rho:+.3f}   {means}")
    rho_all = spearmanr(labels["level"], labels["mos"]).statistic
    mos = labels["mos"]
    print(f"  {'(all types)':15s} rho={rho_all:+.3f}; MOS range {mos.min():.2f}-{mos.max():.2f}, "
          f"mean {mos.mean():.2f}, sd {mos.std():.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    axis.hist(labels["mos"], bins=40, range=(1, 5), color="#4477aa")
    axis.set(xlabel="proxy MOS (1-5; full-reference metrics, not human opinion)", ylabel="images",
             title=f"bundled: {len(labels)} images")
    figure.tight_layout()
    histogram = args.out / "bundled_mos_hist.png"
    figure.savefig(histogram, dpi=120)
    print(f"histogram: {histogram}")


if __name__ == "__main__":
    main()
