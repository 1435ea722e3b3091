"""`tfbench bench harness`: what the harness adds, as images per second of `train_trial` against a bare
PyTorch loop of the same work written here.

Both train the same model (CE, the trial's own optimiser: `harness.train.optim.make_optimizer`) on the same
in-memory data: by default a CIFAR-sized synthetic set (100 classes, 3x32x32 uint8, random crop with 4
pixels of padding and flips), or any registered dataset that fits in memory. The bare loop holds the split
as one tensor on the device, permutes it with a seeded generator each epoch, and per step gathers the batch,
applies the same batched augmentation ops (`harness.data.fast.augment_batch`, `normalise`), runs forward
(bf16 autocast and channels_last on CUDA, as `train_trial`), CE, zero_grad, backward and step; nothing else.

The harness run is `train_trial` with `train.checkpoint: false`; its speed is result.json's `step_time_s` /
`images_per_s`, which leave out evaluation and the first min(3, steps/4) steps. The bare loop is timed the
same way (same warm-up exclusion, same batches including a short last one, images/s = batch / mean step
time). The two alternate for `rounds` rounds (harness first in odd rounds, bare first in even ones), and the
fastest round of each is compared: on a shared machine the fastest round is the one least disturbed by
other work.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tabulate import tabulate

from harness.bench.common import bench_device, load_average, machine_line, set_threads, sync, verdict
from harness.errors import UserError
from harness.folders import TrialFolder

MODEL = "cifar_preact_resnet18"
CIFAR_LIKE = "cifar-like"
TARGET_RATIO = 0.97  # the goal: the harness at 97% or more of the bare loop's throughput
GPU_BATCH, CPU_BATCH = 128, 32
GPU_PER_CLASS, CPU_PER_CLASS = 500, 8  # 50,000 images (CIFAR-100's training set) on a GPU; 800 on CPU


def cifar_like_params(per_class: int, num_classes: int = 100, image_size: int = 32) -> dict[str, Any]:
    """The synthetic dataset at CIFAR-100's shape and augmentation; one validation image per class (evaluation
    is not timed)."""
    return dict(num_classes=num_classes, num_superclasses=min(20, num_classes), image_size=image_size, channels=3,
                train_per_class=per_class, val_per_class=1, crop_padding=4, flip=True)


def harness_run(spec: Any, folder: Path) -> dict[str, float]:
    """`train_trial` as a user runs it; the speed is read back from result.json."""
    from harness.train.loop import train_trial

    train_trial(spec, folder, log=lambda line: None)
    result = TrialFolder(folder).result()
    return {"step_time_s": result["step_time_s"], "images_per_s": result["images_per_s"]}


def bare_run(spec: Any, bundle: Any, device: torch.device) -> dict[str, float]:
    """The same work as `train_trial(spec)` in a plain loop: no method, no context, no metrics, no files."""
    from harness.data.fast import augment_batch, normalise
    from harness.models import create_model
    from harness.train.device import seed_everything
    from harness.train.optim import make_optimizer

    t, mem = spec.train, bundle.memory
    seed_everything(spec.seed)
    model = create_model(spec.model, num_classes=bundle.num_classes, in_chans=bundle.in_chans,
                         input_size=bundle.input_size).to(device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), t)  # the trial's own optimiser, so only the loop around it differs
    gen = torch.Generator(device=device)
    gen.manual_seed(spec.seed)
    x_all, y_all = mem.train_x.to(device), mem.train_y.to(device)  # (N, C, H, W) uint8, (N,)
    c = x_all.shape[1]
    mean = torch.tensor(bundle.mean, dtype=torch.float32, device=device).view(c, 1, 1)
    std = torch.tensor(bundle.std, dtype=torch.float32, device=device).view(c, 1, 1)
    n, b = len(y_all), t.batch_size
    steps = n // b  # the trial's batch plan drops the last partial batch too
    if t.max_steps_per_epoch:
        steps = min(steps, t.max_steps_per_epoch)
    warm = min(3, steps // 4)  # train_trial's warm-up exclusion
    seconds, counted = 0.0, 0
    model.train()
    for epoch in range(t.epochs):
        perm = torch.randperm(n, generator=gen, device=device)
        sync(device)
        tick, done = time.perf_counter(), 0
        for i in range(steps):
            if epoch == 0 and i == warm and warm:
                sync(device)
                tick, done = time.perf_counter(), 0
            idx = perm[i * b:(i + 1) * b]
            x = normalise(augment_batch(x_all[idx], crop_padding=mem.crop_padding, flip=mem.flip, generator=gen),
                          mean, std)
            if on_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda and t.amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
        sync(device)
        seconds += time.perf_counter() - tick
        counted += done
    step_time = seconds / max(counted, 1)
    return {"step_time_s": step_time, "images_per_s": b / step_time}


@dataclass
class HarnessBench:
    rounds: list[dict[str, float]]  # {"round", "harness_ips", "bare_ips", "harness_ms", "bare_ms"}
    harness_ips: float
    bare_ips: float
    ratio: float
    overhead_ms: float              # harness step time minus bare step time (best rounds)
    device: torch.device
    model: str
    dataset: str
    train_size: int
    batch: int
    epochs: int
    steps_per_epoch: int
    smoke: bool
    machine: str
    load_end: tuple[float, float, float] | None
    seconds: float


def bench_harness(*, epochs: int = 2, dataset: str = CIFAR_LIKE, model: str | None = None, batch: int | None = None,
                  per_class: int | None = None, max_steps: int = 0, rounds: int = 2, device: str = "auto",
                  threads: int = 1, smoke: bool = False, seed: int = 0) -> HarnessBench:
    """Images/s of `train_trial` and of the bare loop on the same model and data, and their ratio.

    `smoke`: tiny_cnn on an 8x8, 10-class synthetic set, 1 epoch of 4 steps, one round (a test that keeps
    this code working, not a measurement).
    """
    from harness.config.resolve import resolve_trial
    from harness.data import DATASETS, build_dataset

    t_start = time.perf_counter()
    dev = bench_device(device, target="harness")
    if epochs < 1 or rounds < 1 or max_steps < 0:
        raise UserError(f"bench harness: epochs and rounds must be >= 1 and max_steps >= 0, got {epochs}, "
                        f"{rounds}, {max_steps}")
    if smoke:
        dataset, model, epochs, rounds = CIFAR_LIKE, "tiny_cnn", 1, 1
        batch, max_steps = batch or 8, 4
        data_params = cifar_like_params(per_class=4, num_classes=10, image_size=8)
    elif dataset == CIFAR_LIKE:
        data_params = cifar_like_params(per_class or (GPU_PER_CLASS if dev.type == "cuda" else CPU_PER_CLASS))
    else:
        if dataset not in DATASETS:
            raise UserError(f"bench harness: unknown dataset {dataset!r}; use {CIFAR_LIKE} or a registered "
                            f"in-memory dataset ({', '.join(DATASETS.names())})")
        data_params = {}
    name = "synthetic" if dataset == CIFAR_LIKE else dataset
    model = model or MODEL
    batch = batch or (GPU_BATCH if dev.type == "cuda" else CPU_BATCH)
    old_threads = torch.get_num_threads()
    used_threads = set_threads(threads, dev)
    machine = machine_line(dev, used_threads if dev.type == "cpu" else None)
    try:
        spec = resolve_trial(method="ce", dataset=name, model=model, seed=seed, dataset_params=data_params,
                             train=dict(epochs=epochs, batch_size=batch, checkpoint=False, device=str(dev),
                                        threads=used_threads if dev.type == "cpu" else 0,
                                        max_steps_per_epoch=max_steps, fast_path=True))
        bundle = build_dataset(name, dict(data_params))
        if bundle.memory is None:
            raise UserError(f"bench harness: dataset {dataset!r} does not fit in memory (no fast path); use "
                            f"{CIFAR_LIKE}, synthetic, digits, fashion_mnist, cifar10 or cifar100")
        n = len(bundle.train_labels)
        steps = n // batch if not max_steps else min(max_steps, n // batch)
        out = []
        with tempfile.TemporaryDirectory(prefix="tfbench-bench-harness-") as tmp:
            for r in range(rounds):  # the order alternates, so that going first or second favours neither
                if r % 2 == 0:
                    h = harness_run(spec, Path(tmp) / f"round{r}")
                    b = bare_run(spec, bundle, dev)
                else:
                    b = bare_run(spec, bundle, dev)
                    h = harness_run(spec, Path(tmp) / f"round{r}")
                out.append({"round": r + 1, "harness_ips": h["images_per_s"], "bare_ips": b["images_per_s"],
                            "harness_ms": h["step_time_s"] * 1e3, "bare_ms": b["step_time_s"] * 1e3})
    finally:
        torch.set_num_threads(old_threads)
    best_h, best_b = max(o["harness_ips"] for o in out), max(o["bare_ips"] for o in out)
    return HarnessBench(rounds=out, harness_ips=best_h, bare_ips=best_b, ratio=best_h / best_b,
                        overhead_ms=(batch / best_h - batch / best_b) * 1e3, device=dev, model=model,
                        dataset=f"{dataset} ({name}: {n:,} training images, {bundle.in_chans}x{bundle.input_size}x"
                                f"{bundle.input_size}, {bundle.num_classes} classes, crop padding "
                                f"{bundle.memory.crop_padding}, flip {bundle.memory.flip})",
                        train_size=n, batch=batch, epochs=epochs, steps_per_epoch=steps, smoke=smoke, machine=machine,
                        load_end=load_average(), seconds=time.perf_counter() - t_start)


def format_bench_harness(res: HarnessBench, tablefmt: str = "github") -> str:
    head = (f"harness overhead: CE on {res.model}, {res.dataset}; batch {res.batch}, {res.epochs} epoch(s) of "
            f"{res.steps_per_epoch} steps, evaluation and warm-up steps excluded"
            f"{' (SMOKE: sizes too small to mean anything)' if res.smoke else ''}\n{res.machine}\n")
    table = [(o["round"], f"{o['harness_ips']:.1f}", f"{o['bare_ips']:.1f}", f"{o['harness_ms']:.2f}",
              f"{o['bare_ms']:.2f}", f"{o['harness_ips'] / o['bare_ips']:.3f}") for o in res.rounds]
    table.append(("best", f"{res.harness_ips:.1f}", f"{res.bare_ips:.1f}", f"{res.batch / res.harness_ips * 1e3:.2f}",
                  f"{res.batch / res.bare_ips * 1e3:.2f}", f"{res.ratio:.3f}"))
    headers = ["round", "train_trial images/s", "bare loop images/s", "train_trial ms/step", "bare ms/step",
               "harness / bare"]
    load = res.load_end
    foot = [f"harness overhead per step (best rounds): {res.overhead_ms:+.2f} ms; took {res.seconds:.0f} s"
            + (f"; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else ""),
            f"reference: train_trial >= {TARGET_RATIO:.0%} of the bare loop's images/s: {res.ratio:.1%} -> "
            f"{'not judged (smoke)' if res.smoke else verdict(res.ratio >= TARGET_RATIO)}"]
    return head + tabulate(table, headers=headers, tablefmt=tablefmt, disable_numparse=True) + "\n" + "\n".join(foot)


__all__ = ["HarnessBench", "bare_run", "bench_harness", "cifar_like_params", "format_bench_harness", "harness_run"]
