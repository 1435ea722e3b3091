"""`tfbench bench step`: one full training step (forward, loss, backward, optimiser) of every built-in
method against CE, on the CIFAR pre-activation ResNet-18 with 100 classes at 32x32 random input.

What is timed is the trial's own step: `harness.train.loop.train_step`, the function `train_trial` calls for
every batch, on the step half of the loop's rig (`harness.train.loop.build_step_rig`: the method's extra
modules on the device, SGD from `make_optimizer` over the model's and the extra parameters, bf16 autocast
and channels_last on CUDA), under the Zipf's LS recipe's train config (`resolve_train`), with the learning
rate of `lr_at` and a `StepContext` per step as `train_epoch` makes them. Only the model and the method are
built here (`create_model`, `build_method` with the CIFAR-100 settings a sweep would give it:
`Method.preset`: Zipf's LS with its extra dense layer and bilinear votes, LS
spreading over the others, TF-KD's ResNet-18 values), because there is no data set: each method gets one
fixed random batch (CS-KD a second one, its partners) already on the device, and the data pipeline is not
part of the step. PS-KD's table is filled (epoch >= 1 reads it) and sized for 50,000 training images.

Timing: the methods run round-robin, so load on a shared machine hits them alike; `warmup` rounds first,
then the median over `repeats` rounds. Two modes:
- throughput (the default): a round runs `window` steps of each method back to back and synchronises once
  before and once after them, as a trial's epoch does (the host queues the next step while the device runs
  this one), so a step's time is the window's over `window`: what a trial gets.
- latency (`mode="latency"`): one step per method per round, synchronised before and after it, timed with
  CUDA events on CUDA; it also splits the step: the forward part is the time up to the loss (forward
  passes + loss), the rest is backward + optimiser. On a GPU it is slower than the throughput, since the
  device idles while the host launches the next step.
On CPU every operation is synchronous, so the two modes differ only by the Python overhead of the step.

`case_on_rig` (a rig's fixed batch) and `round_robin` (the timing) also serve `bench step --sweep`, which builds
the rigs of a sweep's own trials instead (harness/bench/costs.py: the summary's time x and memory x).

Peak memory: on CUDA, `max_memory_allocated` while the method's state is built and its first two steps run,
minus what was allocated before (so the other methods' models do not count). On CPU, optionally, a fresh
Python process per method: its peak RSS (VmHWM, reset just before) over building the model, the method
and the batch and two steps, minus its RSS just before; otherwise n/a.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tabulate import tabulate
from torch import Tensor, nn

from harness.bench.common import (
    bench_device,
    fmt_mib,
    load_average,
    machine_line,
    median,
    set_threads,
    sync,
    verdict,
)
from harness.config.resolve import resolve_train
from harness.config.spec import TrainConfig
from harness.models import create_model, feature_channels, stage_info
from harness.results.tables import human_bytes
from harness.train import loop
from harness.train.memory import peak_rss, reset_peak_rss, rss_now
from harness.train.metrics import lr_at
from harness.train.optim import make_optimizer
from methods import METHODS, Method, StepContext, build_method

MODEL = "cifar_preact_resnet18"
NUM_CLASSES = 100
NUM_TRAIN = 50_000        # CIFAR-100's training set: PS-KD's table has one row per image
INPUT_SIZE = 32
PRESET_DATASET = "cifar100"
RECIPE = "zipf"           # the Zipf's LS recipe's train config: SGD 0.1, momentum 0.9, wd 1e-4, x0.1 at 50% and 75%
EPOCH, NUM_EPOCHS = 1, 200  # a step of the second epoch: PS-KD reads its table from epoch 1 on
GPU_BATCH, CPU_BATCH = 128, 32
SMOKE = dict(model="tiny_cnn", num_classes=10, num_train=64, input_size=8, batch=4, repeats=2, warmup=1)

# the goals (CPU): Zipf's LS within 3% of CE per step; CS-KD about twice CE's forward cost
ZIPF_MAX_RATIO = 1.03
CSKD_FORWARD_RANGE = (1.7, 2.3)


def builtin_methods() -> list[str]:
    """The built-in methods (not user ones registered by an import), CE first."""
    names = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("methods.")]
    return ["ce"] + [n for n in names if n != "ce"]


@dataclass
class Case:
    """One method's rig (the training loop's own step half, `build_step_rig`) and the fixed batch it steps on."""

    name: str
    rig: loop.StepRig
    train: TrainConfig
    generator: torch.Generator  # the method's random draws (StepContext.generator), as a trial's method_gen
    x: Tensor                   # (B, 3, S, S)
    xp: Tensor | None           # (B, 3, S, S): CS-KD's partners
    y: Tensor                   # (B,)
    idx: Tensor                 # (B,) dataset indices
    params: dict[str, Any] = field(default_factory=dict)
    sums: dict[str, Tensor] = field(default_factory=dict)
    counts: Tensor | None = None
    mixer: Any = None           # train.mixup / train.cutmix (recipes.make_mixer), as a trial's step mixes
    ema: Any = None             # train.ema (recipes.make_ema), updated after every step as in a trial


def bench_train(batch: int, device: torch.device) -> TrainConfig:
    """The train config every case steps under: the recipe over NUM_EPOCHS epochs at this batch size."""
    return resolve_train(NUM_EPOCHS, RECIPE, batch_size=batch, device=str(device))


def build_case(name: str, *, model_name: str = MODEL, num_classes: int = NUM_CLASSES, num_train: int = NUM_TRAIN,
               input_size: int = INPUT_SIZE, batch: int, device: torch.device, seed: int = 0,
               compile: bool = False) -> Case:
    torch.manual_seed(seed)
    params = METHODS.get(name).preset(PRESET_DATASET, model_name)
    model = create_model(model_name, num_classes=num_classes, in_chans=3, input_size=input_size)
    method = build_method(name, params, num_classes=num_classes, num_train=num_train,
                          feature_channels=feature_channels(model),
                          **({"stages": stage_info(model)} if METHODS.get(name).needs.stages else {}))
    train = bench_train(batch, device).replace(compile=compile)
    rig = loop.build_step_rig(train, model.to(device), method.to(device), device)
    return case_on_rig(name, rig, train, params=params, batch=batch, num_classes=num_classes, num_train=num_train,
                       input_size=input_size, in_chans=3, device=device, seed=seed)


def case_on_rig(name: str, rig: loop.StepRig, train: TrainConfig, *, params: dict[str, Any], batch: int,
                num_classes: int, num_train: int, input_size: int, in_chans: int, device: torch.device,
                seed: int) -> Case:
    """A rig's case: its fixed random batch (B, in_chans, S, S) on the device (CS-KD's partners and DLB's
    repeat a second one), PS-KD's table filled as epoch 1 reads it, DLB's first step taken."""
    rig.model.train()
    method = rig.method
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + 1)

    def images() -> Tensor:
        return torch.randn(batch, in_chans, input_size, input_size, device=device).contiguous(memory_format=fmt)

    x = images()
    xp = images() if method.needs.pairs or method.needs.overlap else None  # CS-KD's partners, DLB's repeat
    y = torch.randint(0, num_classes, (batch,), device=device)
    idx = torch.randperm(num_train, device=device)[:batch]
    if type(method).apply_update is not Method.apply_update:  # PS-KD: a table written in epoch 0, as epoch 2 reads it
        with torch.no_grad():  # in chunks, so that no table-sized temporary inflates the peak memory
            for start in range(0, num_train, 1024):
                rows = torch.arange(start, min(start + 1024, num_train), device=device)
                method.apply_update(rows, torch.softmax(torch.randn(len(rows), num_classes, device=device), dim=1))
    case = Case(name=name, rig=rig, train=train, generator=gen, x=x, xp=xp, y=y, idx=idx, params=params,
                counts=torch.zeros(2, device=device))
    if method.needs.overlap:  # DLB: a trial's first step, which has no previous batch, gives it its teacher
        run_step(replace(case, xp=None))
    return case


def run_step(case: Case, *, step: int = 0, steps_per_epoch: int = NUM_TRAIN // GPU_BATCH,
             mark: Callable[[], None] = lambda: None) -> None:
    """One step of `train_trial`'s loop (harness.train.loop.train_step itself, with the learning rate and the
    context `train_epoch` gives it) on the case's batch; `mark()` is called once the loss exists."""
    t, r = case.train, case.rig
    lr = lr_at(EPOCH * steps_per_epoch + step, steps_per_epoch=steps_per_epoch, lr=t.lr, milestones=t.milestones,
               gamma=t.gamma, warmup_epochs=t.warmup_epochs)
    ctx = StepContext(epoch=EPOCH, num_epochs=t.epochs, indices=case.idx, generator=case.generator)
    if case.xp is not None and r.method.needs.overlap:
        ctx.overlap_targets = case.y
    x = case.x
    if case.mixer is not None:
        x, ctx.targets_b, ctx.lam = case.mixer(x, case.y)
    loop.train_step(model=r.step_model, method=r.method, opt=r.opt, x=x, y=case.y, xp=case.xp, ctx=ctx, lr=lr,
                    classifier=r.classifier, amp=r.amp, sums=case.sums, counts=case.counts,
                    loss_fn=r.loss_fn, after_loss=mark)
    if case.ema is not None:
        case.ema.update(r.model)


def timed_step(case: Case, step: int) -> tuple[float, float]:
    """(forward seconds, whole step seconds) of one step."""
    dev = case.rig.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        start.record()
        run_step(case, step=step, mark=mid.record)
        end.record()
        end.synchronize()
        return start.elapsed_time(mid) / 1e3, start.elapsed_time(end) / 1e3
    marks: list[float] = []
    t0 = time.perf_counter()
    run_step(case, step=step, mark=lambda: marks.append(time.perf_counter()))
    t1 = time.perf_counter()
    return marks[0] - t0, t1 - t0


def timed_window(case: Case, step: int, window: int) -> float:
    """Seconds per step of `window` steps back to back, synchronised only before and after the window."""
    dev = case.rig.device
    sync(dev)
    t0 = time.perf_counter()
    for i in range(window):
        run_step(case, step=step + i)
    sync(dev)
    return (time.perf_counter() - t0) / window


def round_robin(cases: dict[str, Case], *, warmup: int, repeats: int, mode: str = "throughput", window: int = 10,
                on_round: Callable[[int], None] = lambda r: None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The cases take turns, so that load on a shared machine hits them alike: `warmup` untimed rounds, then
    `repeats` timed ones; per case (forward seconds, whole step seconds) of each timed round (forward NaN in
    throughput mode, where a round is `window` steps back to back: `timed_window`)."""
    fwd: dict[str, list[float]] = {n: [] for n in cases}
    full: dict[str, list[float]] = {n: [] for n in cases}
    for r in range(warmup + repeats):
        for n, case in cases.items():
            if mode == "latency":
                f, t = timed_step(case, r)
            else:
                f, t = math.nan, timed_window(case, r * window, window)
            if r >= warmup:
                fwd[n].append(f)
                full[n].append(t)
        on_round(r)
    return fwd, full


def forward_passes(method: Method) -> int:
    return 2 if method.needs.pairs or method.needs.overlap else 1


# --- CPU peak memory in a fresh process ---------------------------------------------------------------

def page_in_kernels() -> None:
    """A few-kilobyte conv / BN / linear step, so that loading the CPU kernels' code is not counted as the
    method's memory (the tensors are too small for the allocator to keep pages the rig could reuse)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    opt = make_optimizer(net.parameters(), bench_train(2, torch.device("cpu")))
    loss = nn.functional.cross_entropy(net(torch.randn(2, 3, 8, 8)).float(), torch.tensor([0, 1]))
    loss.backward()
    opt.step()


def rss_child(config: dict[str, Any]) -> dict[str, int]:
    """Run in a fresh process: (RSS before, RSS high-water mark over building one rig and two steps)."""
    # no tensor is built before the baseline except a few kilobytes: freed memory that the allocator kept
    # would be reused by the rig and hide its growth
    torch.set_num_threads(config.pop("threads"))
    page_in_kernels()
    reset_peak_rss()
    before = rss_now()
    case = build_case(device=torch.device("cpu"), **config)
    for i in range(2):
        run_step(case, step=i)
    return {"before": before, "peak": peak_rss()}


def cpu_peak_rss_delta(name: str, *, batch: int, threads: int, model_name: str = MODEL,
                       num_classes: int = NUM_CLASSES, num_train: int = NUM_TRAIN, input_size: int = INPUT_SIZE,
                       timeout: float = 600) -> int:
    """Bytes: a fresh process's peak RSS over two training steps of `name` minus its RSS before the rig."""
    config = dict(name=name, batch=batch, threads=max(1, threads), model_name=model_name, num_classes=num_classes,
                  num_train=num_train, input_size=input_size)
    code = ("import json, sys; from harness.bench.step import rss_child; "
            "print(json.dumps(rss_child(json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config)], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench step: the memory probe for {name!r} failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return int(got["peak"] - got["before"])


# --- the benchmark --------------------------------------------------------------------------------

@dataclass
class StepBench:
    rows: list[dict[str, Any]]
    device: torch.device
    model: str
    batch: int
    input_size: int
    num_classes: int
    num_train: int
    threads: int
    repeats: int
    warmup: int
    smoke: bool
    machine: str
    load_end: tuple[float, float, float] | None
    memory_kind: str
    seconds: float
    mode: str = "throughput"
    window: int = 1
    compiled: bool = False


MODES = ("throughput", "latency")


def bench_step(*, batch: int | None = None, repeats: int = 20, warmup: int = 5, device: str | torch.device = "auto",
               threads: int = 1, smoke: bool = False, methods: Sequence[str] | None = None,
               memory: bool = True, seed: int = 0, mode: str = "throughput", window: int = 10,
               compile: bool = False) -> StepBench:
    """Median step time of every built-in method (or `methods`, CE always first) and its ratio to CE.

    `mode`: throughput (steps back to back, `window` per synchronisation) or latency (module docstring).
    `compile`: the step under `train.compile` (the compiled forward and loss; compilation falls in the
    untimed steps that build each case and in the warm-up rounds).
    `smoke`: tiny_cnn at 8x8, batch 4, 2 repeats after 1 warm-up round, no CPU memory probe (a test that
    keeps this code working, not a measurement).
    """
    if mode not in MODES:
        raise ValueError(f"bench step: mode must be one of {', '.join(MODES)}, got {mode!r}")
    window = 1 if mode == "latency" else window
    t_start = time.perf_counter()
    dev = device if isinstance(device, torch.device) else bench_device(device, target="step")
    names = ["ce"] + [n for n in (methods or builtin_methods()) if n != "ce"]
    for n in names:
        METHODS.get(n)  # an unknown name fails before any work
    sizes = dict(model_name=MODEL, num_classes=NUM_CLASSES, num_train=NUM_TRAIN, input_size=INPUT_SIZE)
    if smoke:
        sizes = dict(model_name=SMOKE["model"], num_classes=SMOKE["num_classes"], num_train=SMOKE["num_train"],
                     input_size=SMOKE["input_size"])
        batch, repeats, warmup, memory = batch or SMOKE["batch"], SMOKE["repeats"], SMOKE["warmup"], False
        window = min(window, 2)
    batch = batch or (GPU_BATCH if dev.type == "cuda" else CPU_BATCH)
    if batch < 1 or repeats < 1 or warmup < 0 or window < 1:
        raise ValueError(f"bench step: batch, repeats and window must be >= 1 and warmup >= 0, got {batch}, "
                         f"{repeats}, {window}, {warmup}")
    old_threads = torch.get_num_threads()
    used_threads = set_threads(threads, dev)
    machine = machine_line(dev, used_threads if dev.type == "cpu" else None)
    try:
        cases, peak = {}, {}
        for n in names:  # built one after the other, so each method's peak memory is its own
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                base = torch.cuda.memory_allocated(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            cases[n] = build_case(n, batch=batch, device=dev, seed=seed, compile=compile, **sizes)
            for i in range(2):  # the second step is the steady one: momentum buffers exist during backward
                run_step(cases[n], step=i)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
                peak[n] = torch.cuda.max_memory_allocated(dev) - base
        fwd, full = round_robin(cases, warmup=warmup, repeats=repeats, mode=mode, window=window)
        sync(dev)
        if dev.type == "cpu" and memory:
            for n in names:
                peak[n] = cpu_peak_rss_delta(n, batch=batch, threads=used_threads, **sizes)
    finally:
        torch.set_num_threads(old_threads)
    split = mode == "latency"  # only a step synchronised on its own can be split into forward and the rest
    ce_ms = median(full["ce"]) * 1e3
    ce_fwd = median(fwd["ce"]) * 1e3 if split else None
    rows = []
    for n, case in cases.items():
        ms, method = median(full[n]) * 1e3, case.rig.method
        fwd_ms = median(fwd[n]) * 1e3 if split else None
        rows.append({"method": n, "ms": ms, "x_ce": ms / ce_ms, "fwd_ms": fwd_ms,
                     "fwd_x_ce": fwd_ms / ce_fwd if split else None, "bwd_ms": ms - fwd_ms if split else None,
                     "peak_bytes": peak.get(n), "state_bytes": method.state_nbytes(),
                     "forward_passes": forward_passes(method), "maps": method.needs.features,
                     "params": case.params, "images_per_s": batch / (ms / 1e3),
                     "finite": all(math.isfinite(v.item()) for v in case.sums.values())})
    kind = ("cuda max_memory_allocated" if dev.type == "cuda" else
            "fresh-process peak RSS delta" if memory else "not measured")
    return StepBench(rows=rows, device=dev, model=sizes["model_name"], batch=batch, input_size=sizes["input_size"],
                     num_classes=sizes["num_classes"], num_train=sizes["num_train"], threads=used_threads,
                     repeats=repeats, warmup=warmup, smoke=smoke, machine=machine, load_end=load_average(),
                     memory_kind=kind, seconds=time.perf_counter() - t_start, mode=mode, window=window,
                     compiled=compile)


def targets(result: StepBench) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the CPU targets (docs/benchmarks.md); None where the method was not run."""
    by = {r["method"]: r for r in result.rows}
    out: list[tuple[str, str, bool | None]] = []
    z = by.get("zipf")
    out.append((f"zipf step within {ZIPF_MAX_RATIO - 1:.0%} of CE",
                f"x{z['x_ce']:.3f}" if z else "not run", (z["x_ce"] <= ZIPF_MAX_RATIO) if z else None))
    c = by.get("cskd")
    lo, hi = CSKD_FORWARD_RANGE
    split = c is not None and c["fwd_x_ce"] is not None
    out.append((f"cskd forward about 2x CE's ({lo:g}-{hi:g})",
                f"forward x{c['fwd_x_ce']:.2f} (whole step x{c['x_ce']:.2f})" if split else
                "forward not split (throughput mode: --latency splits it)" if c else "not run",
                (lo <= c["fwd_x_ce"] <= hi) if split else None))
    return out


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_bench_step(result: StepBench, tablefmt: str = "github") -> str:
    headers = ["method", "ms/step", "x CE", "forward ms", "fwd x CE", "backward+opt ms", "images/s",
               "peak memory", "method state", "forward passes"]
    table = [(r["method"], f"{r['ms']:.1f}", f"{r['x_ce']:.3f}", _ms(r["fwd_ms"]), _ratio(r["fwd_x_ce"]),
              _ms(r["bwd_ms"]), f"{r['images_per_s']:.0f}", fmt_mib(r["peak_bytes"]),
              human_bytes(r["state_bytes"]), f"{r['forward_passes']}{' (+maps)' if r['maps'] else ''}")
             for r in result.rows]
    res = result
    head = (f"training step: {res.model}, {res.num_classes} classes, {res.input_size}x{res.input_size} random input, "
            f"batch {res.batch} (cskd: {res.batch} anchors + {res.batch} partners); "
            f"{'compiled (train.compile), ' if res.compiled else ''}"
            + (f"throughput: {res.window} steps back to back per synchronisation, median of {res.repeats} "
               f"round-robin windows" if res.mode == "throughput" else
               f"latency: each step synchronised on its own, median of {res.repeats} round-robin steps")
            + f" after {res.warmup} warm-up rounds"
            f"{' (SMOKE: sizes too small to mean anything)' if res.smoke else ''}\n{res.machine}\n")
    settings = "; ".join(f"{r['method']}: " + ", ".join(f"{k}={v}" for k, v in r["params"].items())
                         for r in res.rows if r["params"])
    load = res.load_end
    foot = [f"peak memory: {res.memory_kind}; method state: state_nbytes() with num_train={res.num_train:,}",
            f"method settings ({PRESET_DATASET} presets): {settings or 'defaults'}",
            "forward passes: (+maps) = forward_with_maps (final and previous-stage maps for the dense votes)",
            f"took {res.seconds:.0f} s" + (f"; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                                           if load else "")]
    for what, got, ok in targets(res):
        judged = "not judged (smoke)" if res.smoke else verdict(ok)
        foot.append(f"reference ({'CPU' if res.device.type == 'cpu' else 'stated for CPU'}): {what}: {got} -> {judged}")
    return head + tabulate(table, headers=headers, tablefmt=tablefmt, disable_numparse=True) + "\n" + "\n".join(foot)


__all__ = ["MODES", "Case", "StepBench", "bench_step", "bench_train", "build_case", "builtin_methods", "case_on_rig",
           "cpu_peak_rss_delta", "format_bench_step", "page_in_kernels", "round_robin", "run_step", "targets"]
