"""The frozen features stage against a bare forward pass of the same backbone over the same patches.

On the first ``--images`` images of a dataset (default: LIVE Challenge, 25 test patches per image, from
``--data-root``; its image store is built first, outside the timings), rounds of four measurements
alternate, so a busy or throttled machine weighs on all four alike:

* ``stage``: :func:`benchmark.run.features.cached_features` from an empty features cache — patch
  extraction from the store, conversion and normalisation, the forward passes, the per-image means and
  the write to disk, exactly as a grid runs it;
* ``bare``: the forward passes alone of the very network the stage runs (the backbone with its batch norms
  folded, channels-last) over the same patches, already extracted and normalised, in the same batches;
* ``timm``: the same forward passes through the backbone as timm builds it (batch norms unfolded);
* ``stage, malloc default``: the stage in a child process with ``DOR_IQA_KEEP_FREED_MEMORY=0``, where glibc
  hands every large freed block back to the kernel and each forward pass page-faults its activations
  afresh (:mod:`benchmark.allocator`); the child folds and warms its network up before the timing, as the
  parent has; the page faults per image of both are counted too.

Prints per round and as medians over rounds: patches/s of each, the ratio stage / bare (the share of the
backbone's own speed the stage keeps; goal >= 0.8), bare / timm (what folding gains) and stage / stage with
malloc's default (what keeping freed memory gains), and the largest difference between the stage's
features and timm's (float rounding only). ``--out`` writes ``features.json`` and ``provenance.json``.

Usage::

    python scripts/bench_features.py --data-root /tmp/iqa [--dataset livec] [--images 40] [--rounds 5]
        [--backbones efficientnet_lite0 efficientnet_lite1 efficientnet_lite2] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: no progress bars between the figures

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmark.data import batch_test_positions, cache_root, default_policy, extract_patches, load_labels  # noqa: E402
from benchmark.models import create_backbone, weights_fingerprint  # noqa: E402
from benchmark.factory import FeatureExtractor, Preprocessing  # noqa: E402
from benchmark.run.features import BATCH_PATCHES, cached_features, features_batch_images  # noqa: E402


def forward_rate(model: torch.nn.Module, batches: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    """Patches/s of ``model`` over prepared input batches, and its pooled outputs."""
    outputs = []
    with torch.inference_mode():
        start = time.perf_counter()
        for x in batches:
            outputs.append(model(x))
        seconds = time.perf_counter() - start
    return sum(len(x) for x in batches) / seconds, outputs


def page_faults() -> int:
    """Minor page faults of this process so far (``/proc/self/stat``, field 10)."""
    return int(Path("/proc/self/stat").read_text().split()[9])


def stage_once(extractor: FeatureExtractor, name: str, digest: str, dataset: str, labels, policy) -> tuple[float, int]:
    """(seconds, page faults) of one features stage from an empty features cache."""
    shutil.rmtree(cache_root() / "features", ignore_errors=True)
    faults, start = page_faults(), time.perf_counter()
    cached_features(extractor, name, digest, dataset, labels, policy)
    return time.perf_counter() - start, page_faults() - faults


def child_stage(args: argparse.Namespace, name: str) -> dict[str, float]:
    """The stage in a fresh process with glibc's default malloc thresholds: (seconds, page faults)."""
    command = [sys.executable, __file__, "--child", name, "--dataset", args.dataset, "--images", str(args.images),
               "--threads", str(args.threads), *(["--data-root", args.data_root] if args.data_root else [])]
    env = {**os.environ, "DOR_IQA_KEEP_FREED_MEMORY": "0"}
    return json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)


def bench_backbone(name: str, labels, dataset: str, rounds: int, args: argparse.Namespace) -> dict[str, object]:
    """Rounds of stage / bare / timm on one backbone; medians and per-round figures."""
    backbone = create_backbone(name, True).eval()
    prep = Preprocessing.for_backbone(backbone)
    policy = default_policy(dataset)
    store = prep.store(labels, policy)  # built (or found) outside the timings
    extractor = FeatureExtractor(backbone, prep)
    per_image = policy.test_patches
    step = features_batch_images(per_image)
    batches = [prep.inputs(extract_patches(store, batch_test_positions(store.shapes, range(s, min(s + step, len(store))),
                                                                       per_image, prep.patch)), channels_last=True)
               for s in range(0, len(store), step)]
    patches = sum(len(x) for x in batches)
    timm_model = backbone.to(memory_format=torch.channels_last)
    digest = weights_fingerprint(backbone)
    forward_rate(extractor.model, batches[:1])  # warm-up of both networks
    forward_rate(timm_model, batches[:1])
    per_round = []
    for k in range(rounds):
        seconds, faults = stage_once(extractor, name, digest, dataset, labels, policy)
        stage = patches / seconds
        bare, _ = forward_rate(extractor.model, batches)
        timm_rate, timm_out = forward_rate(timm_model, batches)
        default = child_stage(args, name)
        per_round.append({"stage": stage, "bare": bare, "timm": timm_rate, "stage_malloc_default": patches /
                          default["seconds"], "faults_per_image": faults / len(labels),
                          "faults_per_image_malloc_default": default["faults"] / len(labels)})
        print(f"  {name} round {k + 1}: stage {stage:6.1f}  bare {bare:6.1f}  timm {timm_rate:6.1f}  stage with "
              f"malloc's default {per_round[-1]['stage_malloc_default']:6.1f} patches/s;  stage/bare {stage / bare:.3f}"
              f"  bare/timm {bare / timm_rate:.3f}  page faults per image {faults / len(labels):.0f} vs "
              f"{default['faults'] / len(labels):.0f}", flush=True)
    stage_features = np.load(next((cache_root() / "features").glob("*.npy")))
    timm_features = torch.cat([o.reshape(-1, per_image, o.shape[-1]).mean(1) for o in timm_out]).numpy()
    scale = float(np.abs(timm_features).max())
    return {
        "backbone": name, "images": len(labels), "patches": patches, "per_image": per_image, "batch_images": step,
        "rounds": per_round,
        "median_patches_per_s": {key: round(statistics.median(r[key] for r in per_round), 1)
                                 for key in ("stage", "bare", "timm", "stage_malloc_default")},
        "median_stage_over_bare": round(statistics.median(r["stage"] / r["bare"] for r in per_round), 3),
        "median_bare_over_timm": round(statistics.median(r["bare"] / r["timm"] for r in per_round), 3),
        "median_stage_over_malloc_default": round(statistics.median(r["stage"] / r["stage_malloc_default"]
                                                                    for r in per_round), 3),
        "max_abs_difference_vs_timm_relative": float(np.abs(stage_features - timm_features).max() / scale),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="folder holding the dataset (e.g. a restored LIVE Challenge)")
    parser.add_argument("--dataset", default="livec")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="folder for features.json and provenance.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one stage of this backbone, in a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = load_labels(args.dataset, args.data_root)
    labels = table.iloc[: args.images].copy()
    labels.attrs = table.attrs
    if args.child:
        backbone = create_backbone(args.child, True).eval()
        prep = Preprocessing.for_backbone(backbone)
        extractor = FeatureExtractor(backbone, prep)
        extractor(torch.zeros(BATCH_PATCHES // 2, prep.patch, prep.patch, 3, dtype=torch.uint8), 1)  # fold, warm up
        seconds, faults = stage_once(extractor, args.child, weights_fingerprint(backbone), args.dataset, labels,
                                     default_policy(args.dataset))
        print(json.dumps({"seconds": seconds, "faults": faults}))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        stores = cache_root() / "images"
        os.environ["DOR_IQA_CACHE"] = cache  # features from an empty cache; the image store is linked in
        if stores.is_dir():
            os.symlink(stores, Path(cache) / "images")
        results = [bench_backbone(name, labels, args.dataset, args.rounds, args) for name in args.backbones]
    for row in results:
        print(f"{row['backbone']}: {row['patches']} patches ({row['images']} images x {row['per_image']}), "
              f"median patches/s {row['median_patches_per_s']}; stage/bare {row['median_stage_over_bare']}, "
              f"bare/timm {row['median_bare_over_timm']}, stage/stage with malloc's default "
              f"{row['median_stage_over_malloc_default']}; features vs timm's: max relative difference "
              f"{row['max_abs_difference_vs_timm_relative']:.2g}")
    if args.out:
        from benchmark.provenance import write_provenance

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "features.json").write_text(json.dumps(results, indent=2))
        write_provenance(args.out, sys.argv, duration_s=round(time.perf_counter() - started), threads=args.threads)


if __name__ == "__main__":
    main()
