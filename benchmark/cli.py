"""``dor-bench``: run a grid, list what exists, report a grid, plan a design, score images with a trained run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from benchmark.allocator import keep_freed_memory  # noqa: E402  (no torch, no MLflow)


def _run(args: argparse.Namespace) -> int:
    from benchmark.config import load_grid
    from benchmark.executors import EXECUTORS, default_executor
    from benchmark.run.grid import default_workers, execute, plan_grid
    from benchmark.run.validate import GridValidationError, validate_grid

    grid = load_grid(args.config)
    problems = None
    if args.dry_run:
        try:
            validate_grid(grid, args.data_root, dry_run=True)
        except GridValidationError as exc:
            problems = exc
    plan = plan_grid(grid, args.tracking_uri, dry_run=args.dry_run, data_root=args.data_root,
                     claim_ttl_s=args.claim_ttl)
    cells = grid.cells()
    print(f"grid '{grid.name}' ({grid.source}): {len(cells)} cells × {len(grid.heads)} heads, regime "
          f"{grid.regime}; {plan.n_runs} runs to do, {len(cells) * len(grid.heads) - plan.n_runs} already finished")
    print(f"tracking: {plan.tracking_uri}")
    workers = args.workers or default_workers(plan)
    executor = args.executor or default_executor(workers)
    if args.dry_run:
        print("image policies (resolution; training patches; test patches):")
        for name, policy in grid.image_policies.items():
            print(f"  {name:<10} {policy.describe()}")
        print(f"{'cell':<70} units to run")
        for cell in cells:
            print(f"{cell.key:<70} {', '.join(sorted(plan.todo.get(cell, set()))) or '(done)'}")
        estimate = plan.estimate(workers if EXECUTORS[executor].parallel else 1)
        print(f"estimated time (rates measured here for each backbone):\n{estimate.describe()}")
        if problems:
            print(f"error: {problems}", file=sys.stderr)
            return 1
        return 0
    options = {"cluster": args.slurm_cluster} if args.slurm_cluster else {}
    if args.slurm_partition:
        options["slurm_partition"] = args.slurm_partition
    start = time.perf_counter()
    outcomes = execute(plan, executor, workers, on_cell=_print_cell, options=options)
    ran = sum(len(o.results) - len(o.busy) for o in outcomes)
    print(f"done: {ran} runs in {len({o.cell for o in outcomes})} cells, "
          f"{time.perf_counter() - start:.1f} s; next: dor-bench report --grid {grid.name}")
    failures = [(o.cell, r) for o in outcomes for r in o.failures]
    left = 0 if EXECUTORS[executor].retries else sum(len(o.busy) for o in outcomes)
    if left:
        print(f"{left} run(s) were held by other processes and are theirs to finish", file=sys.stderr)
    if failures:
        print(f"{len(failures)} run(s) FAILED (their MLflow runs hold the message and the traceback); rerun "
              "the same command to retry only those:", file=sys.stderr)
        for cell, result in failures:
            print(f"  {cell.key} {result.head_label}: {result.error}", file=sys.stderr)
        return 1
    return 0


def _print_cell(outcome) -> None:
    from benchmark.schema import FAILED
    scores = "  ".join(f"{r.head_label} srcc={r.metrics['srcc']:.3f}" if r.metrics
                       else f"{r.head_label} {'held by another process' if r.busy else FAILED}"
                       for r in outcome.results)
    print(f"{outcome.cell.key}: {scores}  ({outcome.seconds:.1f} s)", flush=True)


def _list(args: argparse.Namespace) -> int:
    from benchmark.config import builtin_grids
    from benchmark.data import default_policy, list_datasets
    from benchmark.heads import list_heads

    print("heads:    " + ", ".join(list_heads()))
    print("grids:    " + ", ".join(builtin_grids()))
    print("datasets and their default image policies (override with image_policy: in a grid):")
    for name in list_datasets():
        print(f"  {name:<10} {default_policy(name).describe()}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from benchmark.analysis.report import build_report

    result = build_report(args.grid, args.tracking_uri, args.out, pairs=args.pair,
                          split_correlation=args.split_correlation)
    for warning in result.warnings:
        print(f"warning: {warning}")
    print(f"report written to {result.out_dir}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from benchmark.analysis.design import design_plan
    from benchmark.schema import COLUMNS

    plan = design_plan(args.grid, args.tracking_uri, args.target_mde)
    print("MDE80 (smallest true ΔSRCC detected with 80 % power, α = .05) and runs per head of each design, from the "
          "grid's split and seed variance (var_split, var_seed): mde80_dataset for this dataset's own answer (the "
          "paired t-test on split means), mde80 and its floor for the extrapolation beyond it, which assumes r:")
    for (pair_key, head_a, head_b), rows in plan.groupby([COLUMNS.pair_key, "head_a", "head_b"], sort=False):
        first = rows.iloc[0]
        print(f"\n{pair_key}  {head_a} − {head_b}: var_split {first['var_split']:.2e}, var_seed "
              f"{first['var_seed']:.2e}, assumed r {first['r']:.3f}")
        print(rows[["n_splits", "n_seeds", "runs_per_head", "mde80_dataset", "test", "mde80", "floor"]].to_string(
            index=False, na_rep="–", float_format=lambda v: f"{v:.4f}"))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from benchmark.predict import load_trained_model, score_images

    table = score_images(load_trained_model(args.run_id, args.tracking_uri), args.images)
    scored, failed = table[table["error"] == ""], table[table["error"] != ""]
    if len(scored):
        print(scored[["image", "score", "u"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        table.to_csv(args.out, index=False)
    if len(failed):
        print(f"{len(failed)} of {len(table)} images could not be scored (fix or remove them and rerun):",
              file=sys.stderr)
        for row in failed.itertuples():
            print(f"  {row.image}: {row.error}", file=sys.stderr)
    return 1 if len(failed) == len(table) else 0


def _check(args: argparse.Namespace) -> int:
    from benchmark.data import find_bad_images, load_labels

    labels = load_labels(args.dataset, args.data_root)
    bad = find_bad_images(labels)
    for path, reason in bad:
        print(f"{path}: {reason}")
    print(f"{args.dataset}: {len(labels)} images, {len(bad)} unreadable")
    return 1 if bad else 0


def ui_links(uri: str, host: str, port: int) -> list[str]:
    """One line per grid of the store: its name and the URL that opens its runs table in ``mlflow ui``.

    MLflow 3.17's UI opens every experiment in its GenAI view unless the URL (or a click on *Model
    training*, which it remembers) selects the model-training view.
    """
    from benchmark.schema import GRID_TAG
    from benchmark.store import open_client

    experiments = [e for e in open_client(uri).search_experiments() if GRID_TAG in e.tags]
    return [f"  {e.name}: http://{host}:{port}/#/experiments/{e.experiment_id}?workflowType=machine_learning"
            for e in experiments]


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    from benchmark.store import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        print(f"error: {uri} is a tracking server: open it in a browser (add ?workflowType=machine_learning to an "
              "experiment's URL to see its runs)", file=sys.stderr)
        return 1
    print(f"MLflow UI on {uri}; the grids' runs tables:")
    print("\n".join(ui_links(uri, args.host, args.port)) or "  (no grid in this store yet: run dor-bench run first)")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port)]
    return subprocess.call(command)


def _head_pair(text: str) -> tuple[str, str]:
    head_a, sep, head_b = text.partition(":")
    if not (sep and head_a and head_b):
        raise argparse.ArgumentTypeError(f"expected A:B (two head labels), got {text!r}")
    return head_a, head_b


def build_parser() -> argparse.ArgumentParser:
    """The ``dor-bench`` argument parser."""
    from benchmark.executors import EXECUTORS
    from benchmark.store import DEFAULT_TTL_S
    parser = argparse.ArgumentParser(prog="dor-bench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="train a grid (default: the embedded offline default grid)")
    run.add_argument("--config", help="grid YAML file or built-in grid name (default: default)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db)")
    run.add_argument("--executor", choices=tuple(EXECUTORS),
                     help="where cells run: " + "; ".join(f"{e.name}: {e.description}" for e in EXECUTORS.values())
                          + " (default: workers when --workers > 1, else local)")
    run.add_argument("--workers", type=int, help="worker processes of the workers executor (default: one per CPU "
                                                 "core for a frozen grid, else 1)")
    run.add_argument("--data-root", help="folder holding the datasets' images (else $DOR_IQA_DATA)")
    run.add_argument("--slurm-cluster", help="submitit cluster: slurm (default when available), local or debug")
    run.add_argument("--slurm-partition", help="Slurm partition for the job array")
    run.add_argument("--dry-run", action="store_true", help="print the cell table and a time estimate, train nothing")
    run.add_argument("--claim-ttl", type=float, default=DEFAULT_TTL_S, metavar="SECONDS",
                     help=f"a run whose process stopped heartbeating this long ago is taken over (default "
                          f"{DEFAULT_TTL_S:.0f}; keep it far above the clock skew between nodes)")
    run.set_defaults(func=_run)

    chk = sub.add_parser("check", help="decode every image of a dataset and list the unreadable ones")
    chk.add_argument("dataset", help="dataset name (see dor-bench list)")
    chk.add_argument("--data-root", help="folder holding the dataset's images (else $DOR_IQA_DATA)")
    chk.set_defaults(func=_check)

    lst = sub.add_parser("list", help="list heads, datasets and built-in grids")
    lst.set_defaults(func=_list)

    rep = sub.add_parser("report", help="statistics, tables and plots of a grid from MLflow (no retraining)")
    rep.add_argument("--grid", help="grid (experiment) name; default: the only one in the store")
    rep.add_argument("--tracking-uri", help="MLflow tracking URI")
    rep.add_argument("--out", help="output folder (default: results/<grid>)")
    rep.add_argument("--pair", action="append", type=_head_pair, metavar="A:B",
                     help="test head A against head B instead of the grid's compare: list (repeatable)")
    rep.add_argument("--split-correlation", type=float, metavar="R",
                     help="the split correlation the population target assumes instead of the grid's "
                          "split_correlation (default: n_test/n_train of each cell), for a sensitivity report")
    rep.set_defaults(func=_report)

    plan = sub.add_parser("plan", help="MDE and cost of (splits, seeds) designs from a finished pilot grid's variance")
    plan.add_argument("--grid", help="grid (experiment) name; default: the only one in the store")
    plan.add_argument("--tracking-uri", help="MLflow tracking URI")
    plan.add_argument("--target-mde", type=float, metavar="DELTA",
                      help="instead of the standard designs, the fewest splits reaching MDE80 <= DELTA for 1, 2, 3 "
                           "and 5 seeds per split")
    plan.set_defaults(func=_plan)

    ui = sub.add_parser("ui", help="open the store in mlflow ui and print the URL of each grid's runs table")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_ui)

    pred = sub.add_parser("predict", help="score images with the model of a finished run")
    pred.add_argument("images", nargs="+", help="image files")
    pred.add_argument("--run-id", required=True, help="MLflow run id (runs.csv of a report lists them)")
    pred.add_argument("--tracking-uri", help="MLflow tracking URI")
    pred.add_argument("--out", help="also write the table to this CSV file")
    pred.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dor-bench`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("benchmark").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    keep_freed_memory()
    if args.command is None:
        parser.print_help()
        return 2
    # Slurm preempts with SIGTERM: turn it into SystemExit so open runs end KILLED instead of waiting out
    # their claim's ttl.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from mlflow.exceptions import MlflowException

    try:
        return args.func(args)
    except (ValueError, KeyError, OSError, RuntimeError, MlflowException) as exc:  # messages say what to do
        if args.verbose:  # -v shows the traceback
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
