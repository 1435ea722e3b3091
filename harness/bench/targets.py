"""The command-line side of `tfbench bench step | harness | sweep` (entries merged into cmd_bench.TARGETS):
argument set-up and a runner per target; the measuring lives in bench_step, bench_harness and bench_sweep."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from harness.errors import UserError


def _common(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    if device:
        p.add_argument("--device", default="auto", help="auto (CUDA when visible, else CPU; default), cpu, cuda, cuda:N")
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads on CPU (default 1, stated in the output; 0 keeps torch's default)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs, measures nothing")
    p.add_argument("--format", default="github", help="tabulate table format (github, simple, latex, ...)")


def _positive(args: argparse.Namespace, target: str, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"bench {target}: --{name.replace('_', '-')} must be >= 1, got {value}")


def _step_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=None, help="images per step (default 128 on CUDA, 32 on CPU)")
    p.add_argument("--repeats", type=int, default=20, help="timed round-robin rounds (median reported; default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    p.add_argument("--method", dest="methods", action="append", metavar="NAME",
                   help="only this method (repeatable; CE is always run as the reference)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="CPU: skip the peak-memory probe (a fresh process per method)")
    _common(p)


def _step_run(args: argparse.Namespace) -> int:
    from harness.bench.step import bench_step, format_bench_step

    _positive(args, "step", "batch", "repeats")
    if args.warmup < 0:
        raise UserError(f"bench step: --warmup must be >= 0, got {args.warmup}")
    result = bench_step(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device=args.device,
                        threads=args.threads, smoke=args.smoke, methods=args.methods, memory=args.memory)
    print(format_bench_step(result, tablefmt=args.format))
    return 0


def _harness_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    p.add_argument("--dataset", default="cifar-like",
                   help="cifar-like (default: the synthetic set at CIFAR-100's shape, crop + flip) or a registered "
                        "in-memory dataset (synthetic, digits, cifar100 when its files are present, ...)")
    p.add_argument("--model", default=None, help="default cifar_preact_resnet18")
    p.add_argument("--batch", type=int, default=None, help="default 128 on CUDA, 32 on CPU")
    p.add_argument("--per-class", type=int, default=None,
                   help="cifar-like: training images per class (default 500 on CUDA = 50,000 images, 8 on CPU)")
    p.add_argument("--steps", type=int, default=0, help="cap the steps per epoch (default 0: whole epochs)")
    p.add_argument("--rounds", type=int, default=2, help="alternating harness / bare rounds; the best of each counts")
    _common(p)


def _harness_run(args: argparse.Namespace) -> int:
    from harness.bench.harness import bench_harness, format_bench_harness

    _positive(args, "harness", "epochs", "batch", "per_class", "rounds")
    result = bench_harness(epochs=args.epochs, dataset=args.dataset, model=args.model, batch=args.batch,
                           per_class=args.per_class, max_steps=args.steps, rounds=args.rounds, device=args.device,
                           threads=args.threads, smoke=args.smoke)
    print(format_bench_harness(result, tablefmt=args.format))
    return 0


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, default=4, help="trials per concurrency level (default 4)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial (default 20)")
    p.add_argument("--method", default="ce", help="the method every trial trains (default ce)")
    p.add_argument("--concurrent", type=int, nargs="+", default=[1, 2], metavar="K",
                   help="concurrency levels (default 1 2); the speed-up is the last over the first")
    p.add_argument("--no-ray-startup", dest="measure_ray", action="store_false",
                   help="skip timing ray.init / ray.shutdown on their own")
    _common(p, device=False)


def _sweep_run(args: argparse.Namespace) -> int:
    from harness.bench.sweep import bench_sweep, format_bench_sweep
    from methods import METHODS

    _positive(args, "sweep", "trials", "epochs")
    if min(args.concurrent) < 1:
        raise UserError(f"bench sweep: --concurrent levels must be >= 1, got {args.concurrent}")
    METHODS.get(args.method)  # an unknown name is one line before Ray starts
    result = bench_sweep(trials=args.trials, epochs=args.epochs, concurrency=args.concurrent, method=args.method,
                         smoke=args.smoke, measure_ray=args.measure_ray)
    print(format_bench_sweep(result, tablefmt=args.format))
    return 0


# target -> (help, add_arguments, run), in cmd_bench.TARGETS' shape
TARGETS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "step": ("a full training step of every method vs CE on the CIFAR ResNet-18", _step_arguments, _step_run),
    "harness": ("train_trial's images/s against a bare PyTorch loop of the same work", _harness_arguments,
                _harness_run),
    "sweep": ("trials per hour of a small sweep with 1 and 2 concurrent trials", _sweep_arguments, _sweep_run),
}
