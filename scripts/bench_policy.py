"""Measure what the image policy is worth: ``imagenet`` preprocessing vs native-resolution test patches.

Builds a small high-resolution dataset whose quality signal is fine-scale and local, as in real IQA data:
each packaged photograph (:data:`~benchmark.data.photos.PHOTO_NAMES`, one content group each) at its
native resolution, mirrored (never resized) to fill a 1024 x 768 frame, then Gaussian noise, JPEG or a
fine Gaussian blur (the bundled dataset's distortion functions) at a graded strength ``level`` in [0, 1],
applied to the whole frame or to one 512 x 384 quarter of it at a seeded random position. The label is
known: ``score = 5 - 4 * level`` (1-5, higher is better). The CSV holds ``image, score, ref, distortion``.

Then two frozen grids run through the suite's own code (``parse_grid``, ``plan_grid``, ``execute``) into a
temporary SQLite MLflow store, with the shipped default grid's training recipe (its tuning budget, prior
init and probe included), ``efficientnet_lite0`` (offline ImageNet weights) and the heads ``mse`` and ``dor``:

* ``imagenet``: ``{resize: imagenet}`` — shorter side to 256, centre square, the centre 224 patch;
* ``native``: ``{resize: native, test_patches: 25}`` — features are the mean over a 5 x 5 grid of
  224 patches covering the whole 1024 x 768 frame.

Prints the mean (± sd over splits) test SRCC of each head and of the linear probe (reference run) per
policy, the per-split differences native - imagenet, and each grid's wall time (store build, feature
extraction, training and logging; the first grid also loads the backbone). Both grids use the same
splits (a split's seed is its index).

Usage: python scripts/bench_policy.py [--per-group 8] [--splits 10] [--seed 0] [--keep DIR]
(without --keep everything is written to a temporary folder, removed at the end).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from benchmark.config import parse_grid
from benchmark.data.distortions import Distortion, gaussian_blur, gaussian_noise, jpeg
from benchmark.data.photos import PHOTO_NAMES, load_photo
from benchmark.run.grid import execute, plan_grid
from benchmark.analysis.report_data import load_runs, usable_runs
from benchmark.schema import COLUMNS, PROBE_HEAD, ROLE_REFERENCE, ROLE_RESULT
from benchmark.store import open_client

FRAME = (1024, 768)
REGION = (512, 384)
HEADS = ("mse", "dor")
POLICIES = {"imagenet": {"resize": "imagenet"}, "native": {"resize": "native", "test_patches": 25}}


@dataclass(frozen=True)
class Grade:
    """A distortion whose parameter runs from ``mild`` (level 0) to ``severe`` (level 1), linearly or
    geometrically (for JPEG quality, whose visible effect grows as the quality halves, not as it drops)."""

    function: Distortion
    mild: float
    severe: float
    geometric: bool = False

    def parameter(self, level: float) -> float:
        """The distortion's parameter at ``level``."""
        if self.geometric:
            return self.mild * (self.severe / self.mild) ** level
        return self.mild + (self.severe - self.mild) * level


GRADES = {
    "noise": Grade(gaussian_noise, 0.0, 0.1),  # standard deviation on [0, 1]: up to 25 grey levels
    "jpeg": Grade(jpeg, 95, 5, geometric=True),  # PIL quality 95, 52, 29, 16, 9, 5 at levels 0, 0.2, ..., 1
    "blur": Grade(gaussian_blur, 0.0, 2.0),  # sigma in pixels: fine blur, a third of it after a 3x downscale
}


def score_of(level: float) -> float:
    """The known label of an image distorted at ``level``: 5 (pristine) down to 1 (level 1)."""
    return 5.0 - 4.0 * level


def texture_frame(photo: Image.Image) -> Image.Image:
    """The photograph at native resolution, mirrored to fill :data:`FRAME`, its centre window (no resize)."""
    pixels = np.asarray(photo)
    width, height = FRAME
    padding = ((0, max(0, height - pixels.shape[0])), (0, max(0, width - pixels.shape[1])), (0, 0))
    tiled = np.pad(pixels, padding, mode="symmetric")
    top, left = (tiled.shape[0] - height) // 2, (tiled.shape[1] - width) // 2
    return Image.fromarray(np.ascontiguousarray(tiled[top : top + height, left : left + width]))


def distort(frame: Image.Image, name: str, level: float, local: bool, rng: np.random.Generator) -> Image.Image:
    """``frame`` distorted at ``level``, everywhere or only in a :data:`REGION` (8-pixel aligned, as JPEG blocks)."""
    grade = GRADES[name]
    distorted = grade.function(frame, grade.parameter(level), rng)
    if not local:
        return distorted
    top = 8 * int(rng.integers(0, (FRAME[1] - REGION[1]) // 8 + 1))
    left = 8 * int(rng.integers(0, (FRAME[0] - REGION[0]) // 8 + 1))
    box = (left, top, left + REGION[0], top + REGION[1])
    out = frame.copy()
    out.paste(distorted.crop(box), box)
    return out


def build_dataset(folder: Path, per_group: int, seed: int) -> Path:
    """Write ``per_group`` distorted frames of every packaged photograph as PNGs and their labels as a CSV.

    Within a group the levels are stratified (one per ``1 / per_group`` interval), the distortion types
    cycle and half the images are distorted locally, so every group spans the whole score range.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names, rows = list(GRADES), []
    for group, photo_name in enumerate(PHOTO_NAMES):
        frame = texture_frame(load_photo(photo_name))
        for k in range(per_group):
            level = (k + rng.random()) / per_group
            name, local = names[(k + group) % len(names)], bool((k + group // len(names)) % 2)
            path = folder / f"{photo_name}-{k:02d}.png"
            distort(frame, name, level, local, rng).save(path, compress_level=1)
            rows.append({"image": path.name, "score": round(score_of(level), 4), "ref": photo_name,
                         "distortion": f"{name}-{'local' if local else 'whole'}"})
    csv = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def grid_mapping(policy: str, csv: Path, splits: int) -> dict:
    """The shipped default grid's recipe on the generated dataset under one image policy."""
    data = yaml.safe_load(resources.files("benchmark.configs").joinpath("default.yaml").read_text())
    data.update(
        name=f"policy-{policy}", backbones={"efficientnet_lite0": {"pretrained": True}},
        heads={head: data["heads"][head] for head in HEADS}, datasets=["mine"], splits=splits,
        custom_datasets={"mine": {"csv": str(csv), "higher_is_better": True, "scale": [1, 5]}},
        image_policy={"mine": POLICIES[policy]},
    )
    return data


def run_policy(policy: str, csv: Path, splits: int, uri: str) -> tuple[pd.DataFrame, float]:
    """Run one grid; return its test SRCC per (split, head) — the probe included — and its wall time."""
    grid = parse_grid(grid_mapping(policy, csv, splits), f"bench_policy:{policy}")
    start = time.perf_counter()
    plan = plan_grid(grid, uri)
    outcomes = execute(plan)
    seconds = time.perf_counter() - start
    failures = [f"{o.cell.key} {r.head_label}: {r.error}" for o in outcomes for r in o.failures]
    if failures:
        raise RuntimeError(f"grid {grid.name}: {len(failures)} run(s) FAILED, e.g. {failures[0]}")
    runs, warnings = load_runs(open_client(uri), plan.experiment_id), []
    scores = [usable_runs(runs, warnings, role) for role in (ROLE_RESULT, ROLE_REFERENCE)]
    table = pd.concat(scores).pivot(index=COLUMNS.split, columns=COLUMNS.head, values=COLUMNS.test_srcc)
    return table[[PROBE_HEAD, *HEADS]], seconds


def summarise(tables: dict[str, pd.DataFrame], seconds: dict[str, float]) -> None:
    """Print mean ± sd test SRCC per head and policy, the paired differences and the wall times."""
    columns = list(next(iter(tables.values())).columns)
    print(f"\n{'policy':<10} {'wall s':>7}  " + "  ".join(f"{c + ' SRCC':>15}" for c in columns))
    for policy, table in tables.items():
        cells = "  ".join(f"{table[c].mean():>7.3f} ± {table[c].std():.3f}" for c in columns)
        print(f"{policy:<10} {seconds[policy]:>7.1f}  {cells}")
    delta = tables["native"] - tables["imagenet"]
    cells = "  ".join(f"{delta[c].mean():>+7.3f} ± {delta[c].std():.3f}" for c in columns)
    print(f"{'native - imagenet':<18} " + cells)
    wins = "  ".join(f"{c} {int((delta[c] > 0).sum())}/{len(delta)}" for c in columns)
    print(f"splits where native > imagenet: {wins}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=8, help="images per photograph (content group)")
    parser.add_argument("--splits", type=int, default=10, help="random splits per grid")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset's levels, types and regions")
    parser.add_argument("--keep", type=Path, default=None, help="write the dataset, caches and store here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.keep or Path(tempfile.mkdtemp(prefix="dor-iqa-policy-"))
    os.environ["DOR_IQA_CACHE"] = str(work / "cache")
    print(f"cores usable: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.2f}; "
          f"work folder: {work}")
    start = time.perf_counter()
    csv = build_dataset(work / "mine", args.per_group, args.seed)
    labels = pd.read_csv(csv)
    print(f"dataset: {len(labels)} images of {FRAME[0]}x{FRAME[1]}, {labels['ref'].nunique()} content groups, "
          f"{labels['distortion'].value_counts().to_dict()}; built in {time.perf_counter() - start:.1f} s")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the store's tables outside the timed grids
    tables, seconds = {}, {}
    for policy in POLICIES:
        tables[policy], seconds[policy] = run_policy(policy, csv, args.splits, uri)
        print(f"{policy}: {POLICIES[policy]}, {args.splits} splits, {seconds[policy]:.1f} s", flush=True)
    summarise(tables, seconds)
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
