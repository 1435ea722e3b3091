"""`tfbench bench TARGET`: benchmarks that print measured tables. TARGETS is the one table of targets: per target
its help line, its options and its runner, which checks the options (one line per mistake) and calls the
target's plain function in harness/bench/: methods.py (a method's loss alone), step.py (a full training step),
harness.py (train_trial against a bare loop), checkpoint.py (checkpoints on against off), sweep.py (trials
per hour on Ray Tune), gpu.py (the GPU check), data.py (a file-based set's training loader against the model's
step, and against timm's loader).

Flags mean one thing in every target: --device (default auto), --threads, --method (repeatable, also `a,b`),
--smoke, --tablefmt (tabulate's table style; `--format` elsewhere names a results file format).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from harness.cli.common import add_device, resolved_device, split_list
from harness.errors import UserError


def _common(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    if device:
        add_device(p)
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads on CPU (default 1, stated in the output; 0 keeps torch's default)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs, measures nothing")
    p.add_argument("--tablefmt", default="github", help="tabulate table style (github, simple, latex, ...)")


def _positive(args: argparse.Namespace, target: str, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"bench {target}: --{name.replace('_', '-')} must be >= 1, got {value}")


def _device(args: argparse.Namespace, target: str) -> str:
    return resolved_device(args.device, f"bench {target}: --device")


def _step_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=None, help="images per step (default 128 on CUDA, 32 on CPU)")
    p.add_argument("--repeats", type=int, default=20, help="timed round-robin rounds (median reported; default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    p.add_argument("--method", dest="methods", action="append", metavar="NAME",
                   help="only this method (repeatable, or a,b; CE is always run as the reference)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="CPU: skip the peak-memory probe (a fresh process per method)")
    p.add_argument("--latency", action="store_true",
                   help="synchronise around every step (latency, split into forward and backward) instead of the "
                        "default throughput: --window steps back to back per synchronisation, as a trial runs")
    p.add_argument("--window", type=int, default=10, help="throughput: steps per synchronisation (default 10)")
    p.add_argument("--compile", action="store_true", help="the step under train.compile")
    p.add_argument("--sweep", type=Path, default=None, metavar="FILE",
                   help="measure a sweep file's own steps instead: each (data set, model) with every method "
                        "configuration as its trials build them, on the trials' device and threads, against CE "
                        "(--repeats rounds of --window steps after --warmup rounds, fewer where --budget says); cached "
                        "in <--results>/<name>/costs/ when that results folder exists (docs/benchmarks.md)")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="--sweep: the results root whose <name>/costs/ caches the measurement (default ./results)")
    p.add_argument("--remeasure", action="store_true", help="--sweep: measure even where a cached file fits")
    p.add_argument("--budget", type=float, default=None,
                   help="--sweep: seconds of timed rounds per (data set, model), about (default 10): the window, "
                        "then the rounds shrink to fit")
    _common(p)


def _sweep_step_run(args: argparse.Namespace) -> int:
    """`bench step --sweep FILE`: the sweep's own configurations (harness/bench/costs.py)."""
    from harness.bench.costs import BUDGET_S, format_outcomes, measure_sweep
    from harness.config.sweep_file import load_sweep
    from harness.folders import ResultsFolder

    given = [flag for flag, on in (("--batch", args.batch is not None), ("--method", bool(args.methods)),
                                   ("--latency", args.latency), ("--compile", args.compile), ("--smoke", args.smoke),
                                   ("--device", args.device != "auto"), ("--threads", args.threads != 1)) if on]
    if given:
        raise UserError(f"bench step --sweep: {', '.join(given)} cannot be given with --sweep: the sweep's own "
                        f"batch size, methods, device, threads and train settings are measured")
    if args.budget is not None and not args.budget > 0:
        raise UserError(f"bench step: --budget must be > 0 seconds, got {args.budget:g}")
    sweep = load_sweep(args.sweep)
    folder = ResultsFolder((args.results / sweep.name).resolve())
    cached = folder.path if folder.sweep_record() is not None else None
    outcomes = measure_sweep(sweep.trials, cpus_per_trial=sweep.resources.cpus_per_trial,
                             gpus_per_trial=sweep.resources.gpus_per_trial, results_dir=cached, force=args.remeasure,
                             repeats=args.repeats, warmup=args.warmup, window=args.window,
                             budget_s=args.budget or BUDGET_S, memory=args.memory,
                             log=lambda line: print(line, flush=True))
    print(format_outcomes(outcomes, tablefmt=args.tablefmt))
    if sweep.search is not None:
        print("search: the sweep's base configurations were measured (the tuned ones are measured by `tfbench run`)")
    return 0 if all(o.record.get("status") == "measured" for o in outcomes) else 1


def _step_run(args: argparse.Namespace) -> int:
    from harness.bench.step import bench_step, format_bench_step

    _positive(args, "step", "batch", "repeats", "window")
    if args.warmup < 0:
        raise UserError(f"bench step: --warmup must be >= 0, got {args.warmup}")
    if args.sweep is not None:
        return _sweep_step_run(args)
    result = bench_step(batch=args.batch, repeats=args.repeats, warmup=args.warmup, device=_device(args, "step"),
                        threads=args.threads, smoke=args.smoke, methods=split_list(args.methods),
                        memory=args.memory, mode="latency" if args.latency else "throughput", window=args.window,
                        compile=args.compile)
    print(format_bench_step(result, tablefmt=args.tablefmt))
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
    if args.steps < 0:
        raise UserError(f"bench harness: --steps must be >= 0, got {args.steps}")
    result = bench_harness(epochs=args.epochs, dataset=args.dataset, model=args.model, batch=args.batch,
                           per_class=args.per_class, max_steps=args.steps, rounds=args.rounds,
                           device=_device(args, "harness"), threads=args.threads, smoke=args.smoke)
    print(format_bench_harness(result, tablefmt=args.tablefmt))
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
    print(format_bench_sweep(result, tablefmt=args.tablefmt))
    return 0


def _size(text: str) -> tuple[int, int, int]:
    try:
        b, c, v = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be BxCxV, e.g. 256x10000x49, got {text!r}") from None
    return b, c, v


def _methods_arguments(p: argparse.ArgumentParser) -> None:
    from harness.bench.methods import SIZES

    p.add_argument("--size", dest="sizes", type=_size, action="append", metavar="BxCxV",
                   help="batch x classes x votes (repeatable; default: "
                        + ", ".join("x".join(map(str, s)) for s in SIZES) + ")")
    p.add_argument("--method", dest="methods", action="append", metavar="NAME",
                   help="only this method (repeatable, or a,b; CE is always timed as the reference; 'zipf+votes' "
                        "adds the dense classifier)")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per method and size (median reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    _common(p)


def _methods_run(args: argparse.Namespace) -> int:
    from harness.bench.methods import SIZES, bench_methods, format_bench_methods

    if args.repeats < 1 or args.warmup < 0:
        raise UserError(f"bench methods: --repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")
    device = _device(args, "methods")
    try:
        rows = bench_methods(sizes=args.sizes or SIZES, repeats=args.repeats, warmup=args.warmup, smoke=args.smoke,
                             methods=split_list(args.methods), device=device, threads=args.threads)
    except ValueError as e:  # e.g. a V that is not a square
        raise UserError(str(e)) from e
    print(format_bench_methods(rows, tablefmt=args.tablefmt))
    return 0


def _gpu_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=100, help="training steps per epoch measured (default 100)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per configuration (default 2)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers on the DataLoader path (default 8)")
    p.add_argument("--method", dest="methods", action="append", metavar="NAME",
                   help="only this method (repeatable, or a,b; default all; CE is always run as the reference)")
    p.add_argument("--mode", dest="modes", action="append", choices=["eager", "compiled"],
                   help="eager and/or compiled (train.compile) rows (repeatable; default both)")
    p.add_argument("--path", dest="paths", action="append", choices=["fast", "loader"],
                   help="the in-memory fast path and/or the DataLoader path (repeatable; default both)")
    p.add_argument("--out", type=Path, default=None,
                   help="also write bench_gpu.md and bench_gpu.json (--suite: suite.md and suite.json) here")
    p.add_argument("--suite", action="store_true",
                   help="the prepared GPU suite (one call meant to fit in 8 minutes: CUDA tests, losses, every method's "
                        "step eager and compiled, a 2-epoch sweep with two trials per GPU, the file loader, "
                        "host syncs); on a CPU only with --smoke")
    add_device(p)
    p.add_argument("--smoke", action="store_true", help="--suite: tiny sizes, checks that it runs, measures nothing")
    p.add_argument("--section", dest="sections", action="append", metavar="NAME",
                   help="--suite: only this section (repeatable, or a,b; default all: cuda_tests, losses, steps, "
                        "deterministic, sweep, data, sync)")


def _suite_run(args: argparse.Namespace) -> int:
    from harness.bench.suite import SECTIONS, format_suite, run_suite

    sections = tuple(split_list(args.sections) or SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise UserError(f"bench gpu --suite: unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}")
    device = _device(args, "gpu")
    if not device.startswith("cuda") and not args.smoke:
        raise UserError(f"bench gpu --suite: --device {device} is not a GPU; on a CPU the suite runs only in its "
                        f"--smoke form")
    report = run_suite(device=device, smoke=args.smoke, out=args.out, sections=sections)
    print(format_suite(report))
    failed = [name for name, entry in report["sections"].items() if "error" in entry]
    return 1 if failed else 0


def _gpu_run(args: argparse.Namespace) -> int:
    import torch

    from harness.bench.gpu import ALL_METHODS
    from harness.bench.gpu import run as bench_gpu

    if args.suite:
        return _suite_run(args)
    if not torch.cuda.is_available():
        raise UserError("bench gpu: no CUDA device is visible; this benchmark needs one")
    if min(args.steps, args.epochs) < 1 or args.workers < 0:
        raise UserError("bench gpu: --steps and --epochs must be >= 1 and --workers >= 0")
    methods = split_list(args.methods) or list(ALL_METHODS)
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise UserError(f"bench gpu: unknown method {unknown[0]!r}; allowed: {', '.join(ALL_METHODS)}")
    bench_gpu(steps=args.steps, epochs=args.epochs, workers=args.workers, out=args.out, methods=tuple(methods),
              modes=tuple(dict.fromkeys(args.modes or ["eager", "compiled"])),
              paths=tuple(dict.fromkeys(args.paths or ["fast", "loader"])))
    return 0


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None,
                   help="a registered file-based data set (imagenet, tinyimagenet, inat21); default: a generated "
                        "folder of JPEGs in ImageNet's layout, also timed with timm's create_loader")
    p.add_argument("--root", default=None, help="the data set's root (with --dataset; else its usual root)")
    p.add_argument("--image-size", type=int, default=None, help="the data set's image_size (default its own: 224)")
    p.add_argument("--images", type=int, default=512, help="generated folder: training images (default 512)")
    p.add_argument("--classes", type=int, default=8, help="generated folder: classes (default 8)")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 256 on CUDA, 32 on CPU)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per loader after its first (default 3)")
    p.add_argument("--model", default=None, help="the model whose step is timed (default the data set's: resnet50)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps (median reported; default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    _common(p)


def _data_run(args: argparse.Namespace) -> int:
    from harness.bench.data import bench_data, format_bench_data

    _positive(args, "data", "image_size", "images", "classes", "batch", "epochs", "repeats")
    if args.workers < 0 or args.warmup < 0:
        raise UserError(f"bench data: --workers and --warmup must be >= 0, got {args.workers}, {args.warmup}")
    if args.root and not args.dataset:
        raise UserError("bench data: --root needs --dataset (which data set lives there)")
    result = bench_data(dataset=args.dataset, root=args.root, image_size=args.image_size, images=args.images,
                        classes=args.classes, batch=args.batch, workers=args.workers, epochs=args.epochs,
                        model=args.model, repeats=args.repeats, warmup=args.warmup, device=_device(args, "data"),
                        threads=args.threads, smoke=args.smoke)
    print(format_bench_data(result, tablefmt=args.tablefmt))
    return 0


def _checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=6, help="epochs per trial (default 6; >= 3)")
    p.add_argument("--steps", type=int, default=2,
                   help="steps per epoch (default 2: the state's size sets a checkpoint's cost, not the epoch)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="on/off pairs, order alternating (median; default 3)")
    p.add_argument("--every", default=None,
                   help="train.checkpoint_every for the 'on' trials: epochs or an interval like 10min (default: "
                        "the setting's default)")
    _common(p)


def _checkpoint_run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from harness.bench.checkpoint import bench_checkpoint, format_bench_checkpoint
    from harness.config.spec import TrainSettings

    _positive(args, "checkpoint", "epochs", "steps", "batch", "rounds")
    every = args.every
    if every is not None:
        every = int(every) if every.isdigit() else every
        try:
            TrainSettings(checkpoint_every=every)
        except ValidationError as e:
            raise UserError(f"bench checkpoint: --every: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    result = bench_checkpoint(epochs=args.epochs, steps=args.steps, batch=args.batch, rounds=args.rounds,
                              every=every, device=_device(args, "checkpoint"), threads=args.threads,
                              smoke=args.smoke)
    print(format_bench_checkpoint(result, tablefmt=args.tablefmt))
    return 0


# target -> (help, add_arguments, run)
TARGETS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "methods": ("forward+backward time of each method's loss vs CE", _methods_arguments, _methods_run),
    "step": ("a full training step of every method vs CE on the CIFAR ResNet-18; --sweep FILE: on a sweep's own "
             "models, data shapes and method settings (the summary's time x)", _step_arguments, _step_run),
    "harness": ("train_trial's images/s against a bare PyTorch loop of the same work", _harness_arguments,
                _harness_run),
    "sweep": ("trials per hour of a small sweep with 1 and 2 concurrent trials", _sweep_arguments, _sweep_run),
    "checkpoint": ("the extra wall time per epoch that checkpoints add (on against off, one run)",
                   _checkpoint_arguments, _checkpoint_run),
    "gpu": ("the GPU check: training images/s of ResNet-18 with CE and Zipf's LS, both data paths, "
            "and no host sync in a Zipf step; --suite: the prepared GPU suite", _gpu_arguments, _gpu_run),
    "data": ("a file-based set's training loader images/s against the model's step and timm's loader",
             _data_arguments, _data_run),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (help_, add, run_) in TARGETS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        add(sp)
        sp.set_defaults(_bench=run_)


def run(args: argparse.Namespace) -> int:
    return int(args._bench(args) or 0)
