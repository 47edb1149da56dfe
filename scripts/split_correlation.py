"""Measure how much of the split-to-split variance comes from the training set, on the suite's own harness.

The corrected and the variance-components tests inflate the split variance by ``r = n_test / n_train``
(Nadeau & Bengio 2003): the correlation that overlapping training sets induce between splits. Nothing in a
normal grid measures it. Here every split keeps one fixed test set while only the training and validation
sets are redrawn: ``bundled`` minus the test scenes of its split 0 becomes a custom dataset ``fixed-train``
(split ``0.72 / 0.24 / 0.04``, so about as many training and validation images as a default split; its
small test part is unused), the test scenes become ``fixed-test``, scored whole in every split. The recipe
is the default grid's (frozen efficientnet_lite0, prior init, the four-rate tuning budget, two seeds per
split), with its pair ``dor`` vs ``mse``.

With the test set fixed, the seed-corrected between-split variance of ``d = SRCC_dor − SRCC_mse``
(``var_split`` of the variance-components test) is the training-composition part alone, ``var_train``.
Against the same pair's ``var_split`` in the default grid (``--default-stats``, both components) it gives
the training share ``s = var_train / var_split`` (capped at 1: both are estimates), and under the explicit-overlap model of
``scripts/calibration.py`` (per-scene test and training effects, ``bundled``'s real splits) the between-split
correlation ``ρ = (1 − s) ρ_test + s ρ_train`` and the effective ``r = ρ / (1 − ρ)``, to compare with the
``n_test / n_train`` the tests use. A bootstrap over splits (both grids) gives 90 % intervals.

Usage::

    python scripts/split_correlation.py --splits 20 --workers 2 --out results/split-correlation

Writes ``summary.json``, ``summary.md`` and ``provenance.json`` (and the fixed datasets' CSVs) into ``--out``;
the runs go to ``--tracking-uri`` (default ``mlruns/split-correlation.db``), so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import scenario_scales, split_pool  # noqa: E402  (a sibling script)

from benchmark.analysis.comparisons import paired_runs  # noqa: E402
from benchmark.analysis.report_data import Scores, load_runs, usable_runs  # noqa: E402
from benchmark.analysis.stats import split_seed_variance  # noqa: E402
from benchmark.config import parse_grid  # noqa: E402
from benchmark.data import dataset_info, default_policy, load_labels, make_split  # noqa: E402
from benchmark.provenance import write_provenance  # noqa: E402
from benchmark.run.grid import execute, plan_grid  # noqa: E402
from benchmark.store import open_client  # noqa: E402

PAIR = ("dor", "mse")
FRACTIONS = (0.72, 0.24, 0.04)
BOOTSTRAP = 2000


def fixed_test_datasets(out: Path) -> tuple[Path, Path, int]:
    """``fixed-train.csv`` (bundled minus split 0's test scenes) and ``fixed-test.csv`` (those scenes)."""
    labels = load_labels("bundled")
    test_refs = set(make_split(labels, seed=0)["test"]["ref"])
    table = labels[["image", "mos", "ref"]].rename(columns={"mos": "score"})
    paths = out / "fixed-train.csv", out / "fixed-test.csv"
    table[~table["ref"].isin(test_refs)].to_csv(paths[0], index=False)
    table[table["ref"].isin(test_refs)].to_csv(paths[1], index=False)
    return paths[0], paths[1], len(test_refs)


def fixed_test_grid(train_csv: Path, test_csv: Path, n_splits: int) -> dict:
    """The default grid's recipe on lite0, dor and mse, the fixed test set and ``n_splits`` training draws."""
    data = yaml.safe_load(resources.files("benchmark.configs").joinpath("default.yaml").read_text())
    info = dataset_info("bundled")
    custom = {"csv": None, "higher_is_better": info.higher_is_better, "scale": [info.scale_lo, info.scale_hi],
              "image_policy": default_policy("bundled").to_mapping()}
    data.update(name="split-correlation", backbones={"efficientnet_lite0": {"pretrained": True}},
                heads={"mse": {}, "dor": {"num_bins": 28}}, datasets=[{"train": "fixed-train", "test": "fixed-test"}],
                custom_datasets={"fixed-train": {**custom, "csv": str(train_csv)},
                                 "fixed-test": {**custom, "csv": str(test_csv)}},
                split_fractions=list(FRACTIONS), splits=n_splits)
    return data


def run_pairs(uri: str, experiment_id: str) -> pd.DataFrame:
    """Complete-case per-run differences dor − mse (columns ``split, delta``) and the set sizes."""
    usable = usable_runs(load_runs(open_client(uri), experiment_id), [])
    scores = Scores.of(usable)
    pair_key = scores.cells["pair_key"].iloc[0]
    paired = paired_runs(scores, pair_key, *PAIR, "srcc")
    paired = paired[~(paired["failed_a"] | paired["failed_b"])]
    return paired.assign(delta=paired["value_a"] - paired["value_b"])[["split", "seed", "delta"]]


def default_pairs(runs_csv: Path, backbone: str) -> pd.DataFrame:
    """The same per-run differences in the default grid, from its report's ``runs.csv``."""
    runs = pd.read_csv(runs_csv)
    runs = runs[(runs["role"] == "result") & (runs["backbone"] == backbone) & ~runs["failed"].astype(bool)]
    wide = runs.pivot_table(index=["split", "seed"], columns="head", values="test_srcc").dropna(subset=list(PAIR))
    return (wide[PAIR[0]] - wide[PAIR[1]]).rename("delta").reset_index()


def _bootstrap_var_split(runs: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """``var_split`` of ``BOOTSTRAP`` resamples of whole splits (each keeps its seeds)."""
    splits = runs["split"].unique()
    groups = {split: group for split, group in runs.groupby("split")}
    out = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        drawn = rng.choice(splits, size=splits.size)
        sample = pd.concat([groups[s].assign(split=i) for i, s in enumerate(drawn)], ignore_index=True)
        out[b] = split_seed_variance(sample).var_split
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/split-correlation"))
    parser.add_argument("--splits", type=int, default=20, help="training draws (splits) around the fixed test set")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--default-runs", type=Path, default=Path("results/default/runs.csv"),
                        help="runs.csv of the default grid's report (its var_split is the denominator)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/split-correlation.db")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train_csv, test_csv, n_test_scenes = fixed_test_datasets(args.out)
    grid = parse_grid(fixed_test_grid(train_csv, test_csv, args.splits), "split-correlation")
    plan = plan_grid(grid, args.tracking_uri)
    execute(plan, "workers" if args.workers > 1 else "local", args.workers)

    fixed = run_pairs(args.tracking_uri, plan.experiment_id)
    default = default_pairs(args.default_runs, "efficientnet_lite0")
    train_part, whole = split_seed_variance(fixed), split_seed_variance(default)
    rng = np.random.default_rng(0)
    boot_train, boot_whole = _bootstrap_var_split(fixed, rng), _bootstrap_var_split(default, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.clip(np.where(boot_whole > 0, boot_train / boot_whole, 1.0), 0.0, 1.0)  # a share lies in [0, 1]
    pool = split_pool(200)
    scales = scenario_scales(pool, 1.0)
    rho_test = scales["test_composition"]["correlation"]
    rho_nb = scales["nadeau_bengio"]["correlation"]
    rho_train = rho_test + (rho_nb - rho_test) / scales["nadeau_bengio"]["train_share"]

    def effective_r(share: float) -> float:
        rho = (1.0 - share) * rho_test + share * rho_train
        return rho / (1.0 - rho)

    share = min(train_part.var_split / whole.var_split, 1.0) if whole.var_split > 0 else 1.0
    low, high = np.quantile(shares, [0.05, 0.95])
    train_90, whole_90 = np.quantile(boot_train, [0.05, 0.95]), np.quantile(boot_whole, [0.05, 0.95])
    summary = {
        "pair": f"{PAIR[0]} - {PAIR[1]}", "backbone": "efficientnet_lite0", "n_splits": int(fixed["split"].nunique()),
        "n_runs": len(fixed), "fixed_test_scenes": n_test_scenes, "split_fractions": list(FRACTIONS),
        "fixed_test": {"var_split": train_part.var_split, "var_split_90": train_90.tolist(),
                       "var_seed": train_part.var_seed, "mean_delta": float(fixed["delta"].mean())},
        "default_grid": {"var_split": whole.var_split, "var_split_90": whole_90.tolist(), "var_seed": whole.var_seed,
                         "n_splits": int(default["split"].nunique()), "n_runs": len(default)},
        "train_share": share, "train_share_90": [float(low), float(high)],
        "rho_test": rho_test, "rho_train": rho_train,
        "effective_r": effective_r(share), "effective_r_90": [effective_r(low), effective_r(high)],
        "n_test_over_n_train": pool.ratio, "seconds": round(time.perf_counter() - start, 1),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "summary.md").write_text(
        f"Fixed test set ({n_test_scenes} scenes of `bundled`), {summary['n_splits']} training draws x 2 seeds, "
        f"efficientnet_lite0, dor - mse (test SRCC):\n\n"
        "| quantity | value |\n|---|---|\n"
        f"| var_split with the test set fixed (training composition only; 90 % bootstrap interval) | "
        f"{train_part.var_split:.5f} [{train_90[0]:.5f}, {train_90[1]:.5f}] |\n"
        f"| var_seed with the test set fixed | {train_part.var_seed:.5f} |\n"
        f"| var_split of the default grid (training and test composition) | {whole.var_split:.5f} "
        f"[{whole_90[0]:.5f}, {whole_90[1]:.5f}] |\n"
        f"| training share s = ratio of the two, capped at 1 | {share:.2f} [{low:.2f}, {high:.2f}] |\n"
        f"| effective r = ρ / (1 − ρ), ρ = (1 − s) {rho_test:.3f} + s {rho_train:.3f} | "
        f"{summary['effective_r']:.3f} [{summary['effective_r_90'][0]:.3f}, {summary['effective_r_90'][1]:.3f}] |\n"
        f"| r the tests use (n_test / n_train) | {pool.ratio:.3f} |\n")
    write_provenance(args.out, ["python", "scripts/split_correlation.py", *sys.argv[1:]],
                     duration_s=summary["seconds"])
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
