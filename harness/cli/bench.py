"""`tfbench bench TARGET`: benchmarks that print measured tables.

Each target is one entry of TARGETS: a sub-parser set-up and a runner. `methods` times each method's
loss against CE; `step`, `harness`, `sweep` and `gpu` are further entries.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from harness.bench.methods import SIZES, bench_methods, format_bench_methods
from harness.bench.targets import TARGETS as STEP_HARNESS_SWEEP
from harness.errors import UserError


def _size(text: str) -> tuple[int, int, int]:
    try:
        b, c, v = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be BxCxV, e.g. 256x10000x49, got {text!r}") from None
    return b, c, v


def _methods_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", dest="sizes", type=_size, action="append", metavar="BxCxV",
                   help="batch x classes x votes (repeatable; default: "
                        + ", ".join("x".join(map(str, s)) for s in SIZES) + ")")
    p.add_argument("--method", dest="methods", action="append", metavar="NAME",
                   help="only this method (repeatable; CE is always timed as the reference; 'zipf+votes' "
                        "adds the dense classifier)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per method and size (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 keeps torch's default)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repeats: checks that it runs")
    p.add_argument("--format", default="github", help="tabulate table format (github, simple, latex, ...)")


def _methods_run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.warmup < 0:
        raise UserError(f"bench methods: --repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"bench methods: --device {args.device} but CUDA is not available here")
    try:
        rows = bench_methods(sizes=args.sizes or SIZES, repeats=args.repeats, warmup=args.warmup, smoke=args.smoke,
                             methods=args.methods, device=args.device, threads=args.threads)
    except ValueError as e:  # e.g. a V that is not a square
        raise UserError(str(e)) from e
    print(format_bench_methods(rows, tablefmt=args.format))
    return 0


def _gpu_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=150, help="training steps per epoch measured (default 150)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per configuration (default 2)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers on the DataLoader path (default 8)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--out", type=Path, default=None, help="also write bench_gpu.md and bench_gpu.json here")


def _gpu_run(args: argparse.Namespace) -> int:
    import torch

    from .bench_gpu import run as bench_gpu

    if not torch.cuda.is_available():
        raise UserError("bench gpu: no CUDA device is visible; this benchmark needs one")
    if min(args.steps, args.epochs) < 1 or args.workers < 0:
        raise UserError("bench gpu: --steps and --epochs must be >= 1 and --workers >= 0")
    bench_gpu(args.steps, args.epochs, args.workers, args.compile, args.out)
    return 0


# target -> (help, add_arguments, run)
TARGETS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "methods": ("forward+backward time of each method's loss vs CE", _methods_arguments, _methods_run),
    **STEP_HARNESS_SWEEP,  # step, harness, sweep (harness/bench_targets.py)
    "gpu": ("the GPU check: training images/s of ResNet-18 with CE and Zipf's LS, both data paths, "
            "and no host sync in a Zipf step", _gpu_arguments, _gpu_run),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (help_, add, run_) in TARGETS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add(sp)
        sp.set_defaults(_bench=run_)


def run(args: argparse.Namespace) -> int:
    return int(args._bench(args) or 0)
