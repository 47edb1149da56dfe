"""Benchmark the data layer on the full default ``bundled`` dataset.

Measures, in one run on this machine: the build time and size of ``bundled``; the time to build its
decode cache at --size px; epoch read throughput (images/s, one thread, shuffled batches) from the
cache vs decoding the same files with PIL every time, and their ratio. Also prints the Spearman
correlation between distortion level and proxy MOS within each distortion type, and saves a
histogram of the proxy MOS to ``--out/bundled_mos_hist.png``.

Usage: python scripts/bench_data.py [--out /tmp] [--size 256] [--cache DIR] [--workers N]
(without --cache a fresh temporary cache is used, so the build is really timed, and removed at the end).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from benchmark.data import DEFAULT_RECIPE, decode_cache, decode_image, load_bundled


def epoch_from_cache(array: np.ndarray, batch_size: int, seed: int) -> float:
    """Read every row once in shuffled batches into torch tensors; return images/s."""
    order = np.random.default_rng(seed).permutation(len(array))
    start = time.perf_counter()
    for begin in range(0, len(order), batch_size):
        rows = np.sort(order[begin : begin + batch_size])
        batch = torch.from_numpy(np.ascontiguousarray(array[rows]))
        assert batch.shape[0] == len(rows)
    return len(order) / (time.perf_counter() - start)


def epoch_from_files(paths: list[str], size: int, batch_size: int, seed: int) -> float:
    """Decode every image with PIL (same resize + centre crop) in shuffled batches; return images/s."""
    order = np.random.default_rng(seed).permutation(len(paths))
    start = time.perf_counter()
    for begin in range(0, len(order), batch_size):
        indices = order[begin : begin + batch_size]
        batch = torch.from_numpy(np.stack([decode_image(paths[i], size) for i in indices]))
        assert batch.shape[0] == len(indices)
    return len(order) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp"), help="folder for the MOS histogram PNG")
    parser.add_argument("--size", type=int, default=256, help="decode-cache image side")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: fresh temporary folder)")
    parser.add_argument("--workers", type=int, default=None, help="build threads (default: usable cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="dor-iqa-bench-"))
    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(f"cores usable: {cores}; load average before: {load:.2f}; cache: {cache}")

    start, cpu = time.perf_counter(), time.process_time()
    labels = load_bundled(DEFAULT_RECIPE, cache, workers=args.workers)
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"bundled: {len(labels)} images, {labels['ref'].nunique()} scenes ({labels['photo'].nunique()} photos), "
          f"{labels['distortion'].nunique()} distortions; build {build_s:.1f} s wall, {build_cpu:.1f} s CPU "
          f"(load average now {os.getloadavg()[0]:.2f})")

    start = time.perf_counter()
    array = decode_cache(labels, args.size, cache_dir=cache / "decoded")
    print(f"decode cache {array.shape} {array.dtype}: built in {time.perf_counter() - start:.1f} s "
          f"({array.nbytes / 2**20:.0f} MiB)")

    from_cache = epoch_from_cache(array, args.batch_size, seed=0)
    from_files = epoch_from_files(labels["image"].tolist(), args.size, args.batch_size, seed=0)
    print(f"epoch read, one thread: cache {from_cache:,.0f} img/s; PIL decode {from_files:,.0f} img/s; "
          f"ratio {from_cache / from_files:,.1f}x")

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
    del array
    if args.cache is None:
        shutil.rmtree(cache)


if __name__ == "__main__":
    main()
