"""Time one forward + backward pass of prediction heads on a feature batch (CPU), relative to ``mse``.

Usage: ``python scripts/bench_heads.py [--batch 256] [--features 1280] [--heads mse dor] [--threads 1]``.
Prints each head's median time (``torch.utils.benchmark``) and its ratio to the ``mse`` head.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn
from torch.utils import benchmark as torch_benchmark

from benchmark.heads import get_head, list_heads


def forward_backward(head: nn.Module, features: Tensor, u: Tensor) -> None:
    """One training step's head work: forward, loss, backward (no optimiser)."""
    head.zero_grad(set_to_none=True)
    head.loss(head(features), u).backward()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, time every requested head and print the ratios to ``mse``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--features", type=int, default=1280)
    parser.add_argument("--heads", nargs="+", default=["mse", "dor"], choices=list_heads())
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (default 1: stable ratios on shared machines)"
    )
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per head")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    features, u = torch.randn(args.batch, args.features), torch.rand(args.batch)
    heads = ["mse"] + [name for name in args.heads if name != "mse"]
    medians: dict[str, float] = {}
    for name in heads:
        head = get_head(name, args.features)
        timer = torch_benchmark.Timer(
            stmt="forward_backward(head, features, u)",
            globals={"forward_backward": forward_backward, "head": head, "features": features, "u": u},
            num_threads=args.threads,
            label=f"head forward+backward, batch {args.batch} x {args.features}, {args.threads} thread(s), CPU",
            sub_label=name,
        )
        medians[name] = timer.blocked_autorange(min_run_time=args.min_run_time).median
    print(f"torch {torch.__version__}; batch {args.batch} x {args.features}; {args.threads} thread(s); CPU")
    for name in heads:
        print(f"{name:>9}: {medians[name] * 1e6:9.1f} us   ratio to mse: {medians[name] / medians['mse']:.2f}")


if __name__ == "__main__":
    main()
