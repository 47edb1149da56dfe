"""Throughput of the suite's fine-tune loop on cached data vs a bare timm training step, in one run.

The suite's loop (``benchmark.run.training.fit`` reading ``bundled`` from its image store at its policy,
seeded random patches and flips, the DOR head, AMP bf16 + channels-last on CUDA) is timed over one epoch
of ``steps`` batches;
the bare loop trains the same backbone with a linear MSE head on synthetic tensors already on the
device. Both use the same batch size, resolution and optimiser. Prints images/s and the ratio.

Usage: python scripts/bench_throughput.py [--backbone efficientnet_lite0] [--batch 16] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmark.data import default_policy, load_labels
from benchmark.run.features import Preprocessing
from benchmark.heads import get_head
from benchmark.models import IQAModel, create_backbone
from benchmark.run.regimes import ImageSource, RowTable
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on GPU, 16 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="default: 50 on GPU, 6 on CPU")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = args.batch or (128 if device == "cuda" else 16)
    steps = args.steps or (50 if device == "cuda" else 6)
    bare = bare_throughput(args.backbone, batch, steps, device)
    suite = suite_throughput(args.backbone, batch, steps, device)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(json.dumps({"device": name, "backbone": args.backbone, "batch": batch, "steps": steps,
                      "bare_img_s": round(bare, 1), "suite_img_s": round(suite, 1),
                      "ratio": round(suite / bare, 3)}, indent=2))


if __name__ == "__main__":
    main()
