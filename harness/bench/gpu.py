"""The GPU check, as one prepared script: `tfbench bench gpu --out DIR` (its options: harness/cli/bench.py).

1. Images per second of training the CIFAR pre-activation ResNet-18 on a CIFAR-100-sized in-memory set
   (50,000 generated 32x32 images, 100 classes) for every method, eager and compiled (`train.compile`: the
   forward with the maps a method declared, and its loss), on the fast path and the DataLoader path, bf16
   autocast and channels_last, through `train_trial` itself: the numbers are result.json's images_per_s,
   which exclude the warm-up steps (compilation included) and evaluation and are synchronised at the
   epoch boundaries.
2. The losses alone: CE and Zipf's LS (dense votes, B=128, C=100, an 8x8 map of 512 channels: the CIFAR
   shape), eager and compiled, forward + backward, median over repeats after a warm-up, synchronised.
3. Where the time goes: `torch.profiler`'s top CUDA kernels of a few compiled CE and Zipf steps.
4. Host synchronisation: a Zipf epoch, eager and compiled, with `train.sync_debug` on
   (torch.cuda.set_sync_debug_mode("error") around every step), so any synchronisation inside a step raises.
Prints the tables and writes them (markdown and JSON, with the environment) to --out.
"""
from __future__ import annotations

import functools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ALL_METHODS = ("ce", "ls", "tfkd", "pskd", "cskd", "ols", "zipf")
CIFAR_LIKE = dict(num_classes=100, num_superclasses=20, image_size=32, channels=3, train_per_class=500,
                  val_per_class=10, crop_padding=4, flip=True)


def run(steps: int = 100, epochs: int = 2, workers: int = 8, out: Path | None = None,
        methods: tuple[str, ...] = ALL_METHODS, *, modes: tuple[str, ...] = ("eager", "compiled"),
        paths: tuple[str, ...] = ("fast", "loader"), device: str = "cuda", dataset_params: dict | None = None,
        model: str = "cifar_preact_resnet18", loss_repeats: int = 50, profile_steps: int = 5) -> dict[str, Any]:
    """Every section's rows; CE is always run first, as the reference of every ratio. `device`,
    `dataset_params` and `model` exist for the CPU smoke test."""
    from harness.io import environment

    methods = ("ce", *[m for m in methods if m != "ce"])

    env = environment(device)
    data = dataset_params or CIFAR_LIKE
    report: dict[str, Any] = {"env": env, "settings": dict(steps=steps, epochs=epochs, workers=workers, model=model)}
    with _dataset_built_once(), tempfile.TemporaryDirectory() as tmp:
        report["steps"] = _step_rows(Path(tmp), methods, modes, paths, steps, epochs, workers, device, data, model)
        report["losses"] = loss_rows(device, loss_repeats, modes)
        report["profile"] = _profile(Path(tmp), device, data, model, profile_steps) if device.startswith("cuda") else []
        report["sync"] = sync_checks(Path(tmp), device, data, model, modes)
    text = format_report(report)
    print(text)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_gpu.md").write_text(text + "\n")
        (out / "bench_gpu.json").write_text(json.dumps(report, indent=2, default=str))
    return report


class _dataset_built_once:
    """Generate the 50,000 images once for every row (train_trial looks the factory up at call time)."""

    def __enter__(self) -> None:
        import harness.data

        self.build = build = harness.data.build_dataset

        @functools.lru_cache(maxsize=1)
        def once(name: str, items: tuple) -> object:
            return build(name, dict(items))

        harness.data.build_dataset = lambda name, params=None: once(name, tuple(sorted((params or {}).items())))

    def __exit__(self, *exc: Any) -> None:
        import harness.data

        harness.data.build_dataset = self.build


def _spec(method: str, data: dict, model: str, **train: Any):
    from harness.config.resolve import resolve_trial

    # paper protocol: no holdout, so every method trains on the same 50,000 images
    return resolve_trial(method=method, dataset="synthetic", model=model, seed=0, dataset_params=data,
                         train=dict(batch_size=128, checkpoint=False, protocol="paper", **train))


def _step_rows(tmp: Path, methods, modes, paths, steps, epochs, workers, device, data, model) -> list[dict]:
    from harness.train.loop import train_trial

    rows = []
    for path in paths:
        for mode in modes:
            for method in methods:
                fast = path == "fast"
                spec = _spec(method, data, model, epochs=epochs, fast_path=fast, max_steps_per_epoch=steps,
                             num_workers=0 if fast else workers, device=device, compile=mode == "compiled")
                t0 = time.time()
                r = train_trial(spec, tmp / f"{method}-{path}-{mode}", log=lambda s: None)
                rows.append({"method": method, "mode": mode,
                             "path": "fast (in-memory)" if fast else f"DataLoader ({workers} workers)",
                             "images_per_s": r["images_per_s"], "step_ms": r["step_time_s"] * 1e3,
                             "peak_mem_MiB": r["peak_mem_bytes"] / 2**20, "wall_s": time.time() - t0})
    for r in rows:
        ce = next((c for c in rows if c["method"] == "ce" and c["mode"] == r["mode"] and c["path"] == r["path"]), None)
        r["vs_ce"] = r["images_per_s"] / ce["images_per_s"] if ce else None
    return rows


def loss_rows(device: str, repeats: int, modes) -> list[dict]:
    """CE and Zipf's loss alone at the CIFAR shape: forward + backward from leaf logits and a fixed map."""
    import torch
    import torch.nn.functional as F

    from harness.train.device import sync
    from methods import StepContext, build_method

    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(0)
    b, c, d, h = 128, 100, 512, 8
    logits = torch.randn(b, c, device=dev, generator=g).requires_grad_()
    targets = torch.randint(0, c, (b,), device=dev, generator=g)
    fmap = torch.randn(b, d, h, h, device=dev, generator=g)
    fc = torch.nn.Linear(d, c).to(dev)
    zipf = build_method("zipf", {"lam": 0.1, "alpha": 1.0}, num_classes=c, num_train=1, feature_channels=(d, d))
    ctx = StepContext(final_map=fmap, classifier=fc)
    ce_compiled = torch.compile(lambda z, y: F.cross_entropy(z, y)) if "compiled" in modes else None
    fns = {("ce", "eager"): lambda: F.cross_entropy(logits, targets),
           ("zipf", "eager"): lambda: zipf.loss(logits, targets, ctx)["loss"]}
    if "compiled" in modes:
        zipf_compiled = zipf.compiled_loss()
        fns[("ce", "compiled")] = lambda: ce_compiled(logits, targets)
        fns[("zipf", "compiled")] = lambda: zipf_compiled(logits, targets, ctx)["loss"]
    rows = []
    for (method, mode), fn in fns.items():
        for _ in range(10):  # warm-up: compilation, allocator, autotuning
            fn().backward()
        times = []
        for _ in range(repeats):
            sync(dev)
            t0 = time.perf_counter()
            fn().backward()
            sync(dev)
            times.append(time.perf_counter() - t0)
        rows.append({"loss": method, "mode": mode, "size": f"B={b} C={c} V={h * h} D={d}",
                     "ms": statistics.median(times) * 1e3})
    for r in rows:
        ce = next(x for x in rows if x["loss"] == "ce" and x["mode"] == r["mode"])
        r["vs_ce"] = r["ms"] / ce["ms"]
    return rows


def _profile(tmp: Path, device: str, data: dict, model: str, steps: int) -> list[dict]:
    """Top CUDA kernels of a few compiled training steps of CE and Zipf (after train_trial's own warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    from harness.train.loop import train_trial

    rows = []
    for method in ("ce", "zipf"):
        spec = _spec(method, data, model, epochs=1, max_steps_per_epoch=steps + 3, device=device, compile=True)
        train_trial(spec, tmp / f"warm-{method}", log=lambda s: None)  # compile outside the profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            train_trial(spec, tmp / f"prof-{method}", log=lambda s: None)
        events = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)[:10]
        rows += [{"method": method, "kernel": e.key[:70], "calls": e.count, "cuda_ms": e.device_time_total / 1e3}
                 for e in events]
    return rows


def sync_checks(tmp: Path, device: str, data: dict, model: str, modes) -> list[str]:
    from harness.train.loop import train_trial

    if not device.startswith("cuda"):
        return ["host synchronisation: not checked (no CUDA device)"]
    lines = []
    for mode in modes:
        spec = _spec("zipf", data, model, epochs=1, max_steps_per_epoch=50, device=device, sync_debug=True,
                     compile=mode == "compiled")
        try:
            train_trial(spec, tmp / f"sync-{mode}", log=lambda s: None)
            lines.append(f"{mode}: no host synchronisation in 50 Zipf training steps (set_sync_debug_mode('error'))")
        except RuntimeError as e:
            lines.append(f"{mode}: host synchronisation inside the step: {str(e).splitlines()[0]}")
    return lines


def format_report(report: dict[str, Any]) -> str:
    from tabulate import tabulate

    env, s = report["env"], report["settings"]
    steps = tabulate([[r["method"], r["mode"], r["path"], f"{r['images_per_s']:,.0f}", f"{r['step_ms']:.2f}",
                       "n/a" if r["vs_ce"] is None else f"{r['vs_ce']:.3f}", f"{r['peak_mem_MiB']:,.0f}"]
                      for r in report["steps"]],
                     headers=["method", "mode", "data path", "images/s", "ms/step", "x CE throughput", "peak MiB"],
                     tablefmt="github")
    losses = tabulate([[r["loss"], r["mode"], r["size"], f"{r['ms']:.3f}", f"{r['vs_ce']:.2f}"] for r in report["losses"]],
                      headers=["loss", "mode", "size", "ms (fwd+bwd)", "x CE"], tablefmt="github")
    parts = [f"card: {env.get('gpu')}, torch {env['torch']}, {s['model']}, batch 128, bf16 autocast, channels_last, "
             f"{s['steps']} steps x {s['epochs']} epochs per row (first 3 steps of a process excluded)",
             "", "Training step, every method:", "", steps, "", "The losses alone:", "", losses]
    fast_ce = next((r["images_per_s"] for r in report["steps"]
                    if r["method"] == "ce" and r["path"].startswith("fast") and r["mode"] == "compiled"), None)
    if fast_ce:
        parts += ["", f"200 CIFAR-100 epochs at the compiled fast-path CE rate: {200 * 50000 / fast_ce / 60:.1f} min"]
    if report["profile"]:
        parts += ["", "Top CUDA kernels of compiled steps:", "",
                  tabulate([[r["method"], r["kernel"], r["calls"], f"{r['cuda_ms']:.2f}"] for r in report["profile"]],
                           headers=["method", "kernel", "calls", "CUDA ms"], tablefmt="github")]
    parts += ["", *report["sync"]]
    return "\n".join(parts)
