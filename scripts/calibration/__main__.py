"""Calibration study: error rates, power and verdicts of the suite's statistics on simulated grids.

Every study goes through the suite's own functions (``benchmark.analysis.stats``); one module each:

* ridge-regression heads (:mod:`.ridge`; one seed per split, no training noise): :mod:`.null`,
  :mod:`.effects`, :mod:`.friedman`, :mod:`.reference_groups`, :mod:`.cross_dataset`, and
  :mod:`.bootstrap_coverage` (one clustered test set);
* per-run differences with split and seed noise (the tests of ``stats.csv``): :mod:`.structured` (on
  ``bundled``'s real split structure, with the default grid's variance components read from
  ``--components``), :mod:`.assumed_r` and :mod:`.shares` (exact, on the normal model).

Every figure goes to ``summary.json`` (rates with 95 % Wilson intervals and their counts), the per-cell or
per-row values to one CSV per study, ``structured.md`` / ``shares.md`` tabulate those two studies and
``structured.png``, ``shares.png``, ``type1_error.png`` and ``verdicts.png`` plot them. ``provenance.json``
records each study's duration (most of the default run is ``make_split`` for 100,000 split seeds and the
Bayes-VC quadrature).

Usage (from the repository root, so that ``benchmark`` is this checkout)::

    python -m scripts.calibration --out results/calibration --seed 0
    python -m scripts.calibration --out /tmp/vc --studies structured shares --n-structured-grids 200

The real-run calibrations have their own commands: :mod:`.livec` (sub-grids of the ``livec-pool`` grid) and
:mod:`.harness` (null grids through the suite's cells).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.analysis.stats import DEFAULT_ROPE, VERDICTS
from benchmark.provenance import write_provenance

from . import (
    assumed_r,
    bootstrap_coverage,
    cross_dataset,
    effects,
    friedman,
    null,
    reference_groups,
    shares,
    structured,
)

Study = Callable[[argparse.Namespace, np.random.Generator, dict[str, pd.DataFrame]], dict]
STUDIES: dict[str, Study] = {
    "null": null.run, "effects": effects.run, "friedman": friedman.run, "reference_groups": reference_groups.run,
    "cross_dataset": cross_dataset.run, "bootstrap_coverage": bootstrap_coverage.run, "shares": shares.run,
    "structured": structured.run, "assumed_r": assumed_r.run,
}
"""In this order each study gets its child of the seed's generator: appending a study leaves the others' numbers."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m scripts.calibration", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--rope", type=float, default=DEFAULT_ROPE, help="ROPE half-width in SRCC (default 0.01)")
    ap.add_argument("--n-sims", type=int, default=1000, help="null cells of the null study (default 1000)")
    ap.add_argument("--n-samples", type=int, default=500, help="dataset size of the null study")
    ap.add_argument("--n-splits", type=int, default=10, help="J of the null study")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="test fraction of the null study")
    ap.add_argument("--n-effect-sims", type=int, default=500, help="cells per setting and effect (default 500)")
    ap.add_argument("--n-group-sims", type=int, default=500, help="cells per effect with reference groups")
    ap.add_argument("--n-friedman-grids", type=int, default=500)
    ap.add_argument("--n-cross-sims", type=int, default=300)
    ap.add_argument("--cross-bootstrap", type=int, default=200, help="test-set bootstrap resamples per cross cell")
    ap.add_argument("--n-coverage-sims", type=int, default=200)
    ap.add_argument("--coverage-refs", type=int, nargs="+", default=[7], help="test-set references (default 7)")
    ap.add_argument("--coverage-resamples", type=int, default=1000)
    ap.add_argument("--n-structured-grids", type=int, default=2000, help="grids per row of the structured study")
    ap.add_argument("--n-share-grids", type=int, default=10_000, help="simulated grids per share (Bayes-VC)")
    ap.add_argument("--components", type=Path, default=structured.DEFAULT_COMPONENTS,
                    help="stats.csv whose dor - mse (efficientnet_lite0) components the structured study simulates")
    args = ap.parse_args(argv)
    if args.n_sims < 1 or args.n_splits < 2 or not 0 < args.test_fraction < 1:
        ap.error("need --n-sims >= 1, --n-splits >= 2 and 0 < --test-fraction < 1")
    if not 0 < args.alpha < 1 or args.rope <= 0:
        ap.error("need 0 < --alpha < 1 and --rope > 0")
    return args


def verdict_studies(summary: dict) -> dict[str, dict]:
    """Every setting with verdict rates: the effects settings and the reference-groups study."""
    out = dict(summary.get("effects", {}))
    if "reference_groups" in summary:
        out["reference_groups"] = summary["reference_groups"]
    return out


def print_summary(summary: dict) -> None:
    def fmt(r: dict) -> str:
        return f"{r['rate']:.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}] ({r['count']}/{r['n']})"

    def rates(res: dict) -> str:
        return "; ".join(f"{k} {v['rate']:.3f}" for k, v in res.items() if isinstance(v, dict) and "rate" in v)

    if "null" in summary:
        for t in summary["null"]["tests"].values():
            print(f"null  {t['label']:>28}: type-I error {fmt(t)}")
    for name, res in verdict_studies(summary).items():
        for e in res["effects"]:
            test = e.get("corrected_t_type1") or e["corrected_t_power"]
            verdicts = ", ".join(f"{v} {e['verdicts'][v]['rate']:.3f}" for v in VERDICTS)
            print(f"{name}  Δ={e['true_delta']:.4f}: corrected rejects {test['rate']:.3f}; {verdicts}; "
                  f"mean MDE80 {e['mean_mde80']:.4f}")
    if "friedman" in summary:
        f = summary["friedman"]
        print(f"friedman  (cell x split) blocks {fmt(f['cell_split_blocks'])}; cell blocks {fmt(f['cell_blocks'])}; "
              f"CD drawn {fmt(f['critical_difference_drawn'])}; any pair (signed-rank, Holm) "
              f"{fmt(f['pairwise_signed_rank_holm_any'])}")
    if "shares" in summary:
        for row in summary["shares"]["max_over_shares"]:
            print(f"shares  J={row['n_splits']:3d} S={row['n_seeds']} {row['test']:>14}: max type-I "
                  f"{row['rate']:.3f} at share {row['share']:g}")
    if "assumed_r" in summary:
        for row in summary["assumed_r"]["max_over_shares"]:
            print(f"assumed_r  J={row['n_splits']} true r {row['true_r']:.2f}: max type-I {row['rate']:.3f} at share "
                  f"{row['share']:g}")
    if "structured" in summary:
        for name, info in summary["structured"]["scenarios"].items():
            print(f"structured  {name}: train share {info['train_share']}, correlation {info['correlation']} "
                  f"(measured {info['measured_correlation']})")
    for study in ("cross_dataset", "bootstrap_coverage"):
        for name, res in summary.get(study, {}).items():
            if name != "settings":
                print(f"{study} {name}: {rates(res)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    summary: dict = {"settings": {"seed": args.seed, "alpha": args.alpha, "rope": args.rope}, "durations_s": {}}
    tables: dict[str, pd.DataFrame] = {}
    # One generator per study (spawned from the seed), so a study's numbers do not depend on which others run.
    generators = dict(zip(STUDIES, np.random.default_rng(args.seed).spawn(len(STUDIES)), strict=True))
    for name, study in STUDIES.items():
        if name in args.studies:
            t0 = time.perf_counter()
            summary[name] = study(args, generators[name], tables)
            summary["durations_s"][name] = round(time.perf_counter() - t0, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(args.out / f"{name}.csv", index=False)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if "null" in summary:
        null.plot(summary["null"], args.alpha, args.out / "type1_error.png")
    if verdict_studies(summary):
        effects.plot_verdicts(verdict_studies(summary), args.out / "verdicts.png")
    if "shares" in summary:
        shares.plot(tables["shares"], args.alpha, args.out / "shares.png")
        (args.out / "shares.md").write_text(shares.markdown(tables["shares"]), encoding="utf-8")
    if "structured" in summary:
        structured.plot(tables["structured"], summary["structured"], args.alpha, args.out / "structured.png")
        (args.out / "structured.md").write_text(structured.markdown(tables["structured"], summary["structured"]),
                                                encoding="utf-8")
    duration = time.perf_counter() - start
    write_provenance(
        args.out,
        [sys.executable, "-m", "scripts.calibration", *(sys.argv[1:] if argv is None else argv)],
        duration_s=round(duration, 2),
        study_durations_s=summary["durations_s"],
    )
    print_summary(summary)
    print(f"wrote {args.out} in {duration:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
