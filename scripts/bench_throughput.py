"""Throughput of the fine-tune input pipeline and loop: the patch loader vs the GPU step rates it must feed,
and the suite's loop vs a bare timm training step, in one run.

Loader part (``--part loader``; no GPU needed): a store of ``--images`` generated 1024 x 768 JPEGs at
KonIQ's fine-tune policy (512 x 384, one random 224 patch + flip per image, 25 test patches), read through
the suite's ``ImageSource`` with one thread: uint8 patches/s on the host (what a GPU run asks of the CPU),
the former per-patch torch flip at torch's default thread count and at one thread, normalised float
batches on the CPU, and training epochs against a simulated GPU step (a sleep of batch / rate s for
resnet50 at 4,357 img/s and ViT-B/16 at 2,686 img/s, one H200, bf16, batch 128; the device is torch's
``meta`` device, so the device-side flip and normalisation cost nothing, as on a GPU) without and with
``ImageSource.prefetch``. Prints patches/s per core and the share of the step rate each gets.

Step part (``--part step``): the suite's loop (``benchmark.run.training.fit`` reading ``bundled`` from its
image store at its policy, seeded random patches and flips, the DOR head, AMP bf16 + channels-last on
CUDA) is timed over one epoch of ``steps`` batches; the bare loop trains the same backbone with a linear
MSE head on synthetic tensors already on the device. Both use the same batch size, resolution and
optimiser. Prints images/s and the ratio.

Usage: python scripts/bench_throughput.py [--part all|loader|step] [--backbone efficientnet_lite0]
       [--batch 16] [--steps 10] [--images 400] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench_data import koniq_like_jpegs
from benchmark.data import (
    batch_test_positions,
    default_policy,
    extract_patches,
    load_labels,
    train_patch_positions,
)
from benchmark.factory import Preprocessing
from benchmark.heads import get_head
from benchmark.models import IQAModel, create_backbone
from benchmark.data.cell_data import RowTable
from benchmark.run.regimes import ImageSource
from benchmark.config import TrainSettings
from benchmark.run.training import fit


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def suite_throughput(backbone: str, batch: int, steps: int, device: str) -> float:
    labels = load_labels("bundled")
    rows = RowTable([labels])
    net = create_backbone(backbone, True)
    model = IQAModel(net, get_head("dor", net.num_features, num_bins=28)).to(device)
    if device.startswith("cuda"):
        model = model.to(memory_format=torch.channels_last)
    prep = Preprocessing.for_backbone(model.backbone)
    source = ImageSource(rows, [default_policy("bundled")], prep, seed=0, device=device)
    targets = torch.from_numpy(labels["u"].to_numpy(np.float32))
    train_idx = np.arange(batch * steps) % len(labels)  # wraps around on a small dataset
    val_idx = np.arange(len(labels) - batch, len(labels))
    settings = TrainSettings(1, batch, 1, "adamw", 1e-4, 1e-4, "constant", 0, 1.0)
    fit(model, model.head, source, targets, train_idx[:batch * 2], val_idx, [np.arange(batch * 2)], settings, device)
    _sync(device)
    start = time.perf_counter()
    fit(model, model.head, source, targets, train_idx, val_idx, [np.arange(len(train_idx))], settings, device)
    _sync(device)
    return len(train_idx) / (time.perf_counter() - start)


def bare_throughput(backbone: str, batch: int, steps: int, device: str) -> float:
    model = create_backbone(backbone, True)
    size = Preprocessing.for_backbone(model).patch
    head = torch.nn.Linear(model.num_features, 1)
    net = torch.nn.Sequential(model, head).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.rand(batch, 1, device=device)
    if device.startswith("cuda"):
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.mse_loss(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


GPU_STEP_RATES = {"resnet50": 4357.0, "vit_base_patch16_224": 2686.0}
"""Bare training-step images/s on one H200 at bf16, batch 128 (the rates the loader must feed)."""
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def rate(function, count: int, repeats: int = 3) -> float:
    """Best of ``repeats`` items/s of ``function()``, which handles ``count`` items (a busy machine only adds time)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return count / best


def per_patch_torch_flips(source: ImageSource, batches: list[np.ndarray]) -> None:
    """The former extraction: each flipped patch flipped by its own torch op (one parallel region each)."""
    store = source.stores[0]
    for batch in batches:
        positions = train_patch_positions(store.shapes, batch, 1, source.prep.patch, source.generator)
        out = extract_patches(store, positions, flip=False)
        for k in positions.flips.nonzero().flatten().tolist():
            out[k] = out[k].flip(1)


def host_patches(source: ImageSource, batches: list[np.ndarray]) -> None:
    """The host's share of a GPU epoch: positions drawn, uint8 patches copied, flips left to the device."""
    store = source.stores[0]
    for batch in batches:
        positions = train_patch_positions(store.shapes, batch, 1, source.prep.patch, source.generator)
        extract_patches(store, positions, flip=False)


def simulated_epoch(source: ImageSource, batches: list[np.ndarray], step_s: float, prefetch: bool) -> float:
    """A training epoch whose step is a sleep of ``step_s`` (the GPU busy, the CPU free), as ``fit`` runs it;
    returns the seconds the calling thread spent outside the step (its input work)."""
    source.restart()
    busy = 0.0
    for k, batch in enumerate(batches):
        start = time.perf_counter()
        source.train_inputs(batch)
        if prefetch and k + 1 < len(batches):
            source.prefetch(batches[k + 1])
        busy += time.perf_counter() - start
        time.sleep(step_s)
    return busy


def loader_throughput(images: int, batch: int, cache: Path) -> dict[str, object]:
    """Patches/s of the fine-tune loader on one core vs the GPU step rates; prints a table, returns the figures."""
    torch_threads = torch.get_num_threads()
    labels = pd.DataFrame({"image": koniq_like_jpegs(cache / "koniq_like", images)})
    os.environ["DOR_IQA_CACHE"] = str(cache)
    policy = default_policy("koniq10k")
    prep = Preprocessing(224, 0.875, IMAGENET_MEAN, IMAGENET_STD)
    source = ImageSource(RowTable([labels]), [policy], prep, seed=0, device="meta")  # meta: device work is free
    generator = np.random.default_rng(0)  # epochs of shuffled full batches, >= 40 batches in all
    order = np.concatenate([generator.permutation(images) for _ in range(-(-40 * batch // images))])
    batches = [order[start : start + batch] for start in range(0, len(order) - batch + 1, batch)]
    patches = len(batches) * batch
    figures: dict[str, object] = {"images": images, "batch": batch, "batches": len(batches),
                                  "policy": policy.describe(), "torch_threads_default": torch_threads}
    first = batches[: images // batch]  # the first epoch, while the process maps the store's pages
    figures["first_pass_uint8_patch_s"] = rate(lambda: host_patches(source, first), len(first) * batch, repeats=1)
    figures["uint8_patch_s"] = rate(lambda: host_patches(source, batches), patches)
    figures["former_per_patch_flip_patch_s_default_threads"] = rate(lambda: per_patch_torch_flips(source, batches),
                                                                    patches)
    torch.set_num_threads(1)
    figures["former_per_patch_flip_patch_s_1_thread"] = rate(lambda: per_patch_torch_flips(source, batches), patches)
    cpu = ImageSource(RowTable([labels]), [policy], prep, seed=0, device="cpu")
    figures["float_on_cpu_patch_s"] = rate(lambda: [cpu.train_inputs(rows) for rows in batches], patches)
    test_rows = [np.arange(start, min(start + 8, images)) for start in range(0, images, 8)]
    store = source.stores[0]
    figures["test_uint8_patch_s"] = rate(
        lambda: [extract_patches(store, batch_test_positions(store.shapes, rows, policy.test_patches, prep.patch))
                 for rows in test_rows], images * policy.test_patches)
    torch.set_num_threads(torch_threads)
    load = os.getloadavg()[0]
    print(f"\nloader: {images} generated 1024x768 JPEGs stored at {policy.describe()}; {len(batches)} batches of "
          f"{batch}; one thread; load average {load:.2f}")
    for key in ("first_pass_uint8_patch_s", "uint8_patch_s", "former_per_patch_flip_patch_s_default_threads",
                "former_per_patch_flip_patch_s_1_thread", "float_on_cpu_patch_s", "test_uint8_patch_s"):
        print(f"  {key:48s} {figures[key]:9,.0f} patches/s")
    uint8 = float(figures["uint8_patch_s"])
    print("  (the training thread's input work includes the device-side flip and normalisation, on the meta "
          "device ~1 ms/batch of Python dispatch that a GPU's asynchronous kernel launches replace: a lower bound)")
    for model, gpu in GPU_STEP_RATES.items():
        step_s = batch / gpu
        for mode in ("sync", "prefetch"):
            start = time.perf_counter()
            busy = simulated_epoch(source, batches, step_s, mode == "prefetch")
            wall = time.perf_counter() - start
            host_ms = 1e3 * busy / len(batches)
            projected = batch / (step_s + host_ms / 1e3)
            figures[f"{model}_{mode}_img_s"] = patches / wall
            figures[f"{model}_{mode}_host_ms_per_batch"] = host_ms
            figures[f"{model}_{mode}_projected_img_s"] = projected
            print(f"  simulated {model} step ({gpu:,.0f} img/s, {1e3 * step_s:.1f} ms/batch), {mode:8s}: "
                  f"{patches / wall:,.0f} img/s measured; the training thread's input work {host_ms:.2f} ms/batch "
                  f"-> {projected:,.0f} img/s = {projected / gpu:.0%} of the step rate (load {os.getloadavg()[0]:.2f})")
        print(f"  {model}: one core copies {uint8 / gpu:.1f}x the patches the step consumes")
    figures["load_average"] = load
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "loader", "step"), default="all")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on GPU, 16 on CPU (loader: 128)")
    parser.add_argument("--steps", type=int, default=None, help="default: 50 on GPU, 6 on CPU")
    parser.add_argument("--images", type=int, default=400, help="generated 1024x768 JPEGs of the loader part")
    parser.add_argument("--cache", type=Path, default=None, help="loader cache (default: a temporary folder)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu (no GPU here)'}; cores usable: "
          f"{len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.2f}")
    if args.part in ("all", "loader"):
        cache = args.cache or Path(tempfile.mkdtemp(prefix="dor-iqa-loader-"))
        figures = loader_throughput(args.images, args.batch or 128, cache)
        print(json.dumps({key: round(value, 1) if isinstance(value, float) else value
                          for key, value in figures.items()}, indent=2))
        if args.cache is None:
            shutil.rmtree(cache)
    if args.part in ("all", "step"):
        batch = args.batch or (128 if device == "cuda" else 16)
        steps = args.steps or (50 if device == "cuda" else 6)
        bare = bare_throughput(args.backbone, batch, steps, device)
        suite = suite_throughput(args.backbone, batch, steps, device)
        name = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
        print(json.dumps({"device": name, "backbone": args.backbone, "batch": batch, "steps": steps,
                          "bare_img_s": round(bare, 1), "suite_img_s": round(suite, 1),
                          "ratio": round(suite / bare, 3), "load_average": round(os.getloadavg()[0], 2)}, indent=2))


if __name__ == "__main__":
    main()
