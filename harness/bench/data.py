"""`tfbench bench data`: does the training loader keep up with the model's step?

A file-based data set's training loader, exactly as a trial gets it (`build_rig(spec).loaders.batches()`:
device-ready, normalised float batches), is timed in images per second over whole epochs, against the
model's training step at the same batch size (`harness.bench.step`'s own timing of `train_step`, CE), and
the slower of the two is named as the bottleneck. Two loaders of ours are timed: the device path (uint8
batches, crop with padding, flip and normalisation on the device: the default) and the torchvision path
(`train.fast_path: false`: everything in the workers, float batches: the loader before the device path).

By default the data is a generated folder of JPEGs in ImageNet's layout (sizes drawn between 64 and 256
pixels, smooth content with noise so they compress like photographs), written into a temporary folder and
removed afterwards; there timm's `create_loader` (its `PrefetchLoader`: uint8 batches, normalised on the
device) over timm's `ImageDataset` of the same files, with the same batch size, workers, image size and
augmentation (random-resized-crop and flip; colour jitter off, as ours has none) is timed in the same run.
`dataset`/`root` time a registered file-based set instead (timm too where the root has an ImageFolder
`train/`).

Timing: each loader's first epoch includes starting its persistent workers and is reported on its own; then
the loaders alternate epoch by epoch for `epochs` rounds (so load on a shared machine hits them alike) and
the median epoch counts. An epoch is timed from asking for the iterator to the last batch on the device
(synchronised on CUDA); images/s = images yielded / seconds. The loader and the step are timed separately:
in a trial on a CPU they share the cores, on a GPU machine they do not.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from harness.bench.common import bench_device, load_average, machine_line, median, set_threads, sync
from harness.errors import UserError

GENERATED = "generated"
GPU_BATCH, CPU_BATCH = 256, 32
SMOKE = dict(classes=2, images=8, image_size=16, batch=4, workers=0, epochs=1, model="tiny_cnn", repeats=1,
             warmup=0, min_px=16, max_px=32)


def make_jpeg_tree(root: Path, *, classes: int, images: int, min_px: int = 64, max_px: int = 256,
                   seed: int = 0) -> Path:
    """root/train/<class>/*.JPEG (`images` in all) and root/val/<class>/*.JPEG (one per class): ImageNet's
    layout; each image of a random size in [min_px, max_px], a smooth random field plus noise, quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", images), ("val", classes)):
        for i in range(count):
            h, w = (int(v) for v in rng.integers(min_px, max_px + 1, 2))
            coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
            img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)  # (h, w, 3)
            folder = root / split / f"n{i % classes:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{split}_{i:06d}.JPEG", quality=90)
    return root


def time_epoch(make: Callable[[], Iterable], device: torch.device) -> tuple[int, float]:
    """(images, seconds) of one pass: from asking for the iterator to the last batch on the device."""
    sync(device)
    t0, n = time.perf_counter(), 0
    for batch in make():
        n += len(batch[1])
    sync(device)
    return n, time.perf_counter() - t0


def our_loader(name: str, params: dict[str, Any], bundle: Any, *, fast_path: bool, batch: int, workers: int,
               device: torch.device) -> Callable[[], Iterable]:
    """A trial's training epoch iterator (build_rig's loaders, the paper protocol: the whole training split)."""
    from harness.config.resolve import resolve_trial
    from harness.train.loop import build_rig

    spec = resolve_trial(method="ce", dataset=name, model="tiny_cnn", seed=0, dataset_params=params,
                         train={"epochs": 1, "batch_size": batch, "num_workers": workers, "fast_path": fast_path,
                                "device": str(device), "protocol": "paper", "checkpoint": False})
    return build_rig(spec, bundle).loaders.batches


def timm_loader(train_root: Path, *, size: int, batch: int, workers: int, mean: tuple[float, ...],
                std: tuple[float, ...], device: torch.device) -> Callable[[], Iterable]:
    from timm.data import ImageDataset, create_loader

    loader = create_loader(ImageDataset(str(train_root)), input_size=(3, size, size), batch_size=batch,
                           is_training=True, use_prefetcher=True, color_jitter=0.0, hflip=0.5,
                           interpolation="bilinear", mean=mean, std=std, num_workers=workers,
                           pin_memory=device.type == "cuda", device=device, persistent_workers=workers > 0)
    return lambda: loader


def step_rate(*, model: str, num_classes: int, num_train: int, size: int, batch: int, device: torch.device,
              repeats: int, warmup: int) -> float:
    """Images/s of CE's training step (`bench step`'s case and timing) at this batch and image size."""
    from harness.bench.step import build_case, timed_window

    case = build_case("ce", model_name=model, num_classes=num_classes, num_train=num_train, input_size=size,
                      batch=batch, device=device)
    # throughput, as a trial steps (a window of steps per synchronisation): what the loader has to keep up with
    window = 5
    times = [timed_window(case, r * window, window) for r in range(warmup + repeats)][warmup:]
    return batch / median(times)


@dataclass
class DataBench:
    rows: list[dict[str, Any]]
    step_images_per_s: float
    dataset: str
    train_images: int
    image_size: int
    batch: int
    workers: int
    epochs: int
    model: str
    smoke: bool
    machine: str
    seconds: float
    pixels: tuple[int, int] = (64, 256)  # the generated images' smallest and largest side


def bench_data(*, dataset: str | None = None, root: str | None = None, image_size: int | None = None,
               images: int = 512, classes: int = 8, batch: int | None = None, workers: int = 2, epochs: int = 3,
               model: str | None = None, repeats: int = 5, warmup: int = 1, device: str = "auto",
               threads: int = 1, smoke: bool = False) -> DataBench:
    from harness.data import DATASETS, build_dataset

    t_start = time.perf_counter()
    dev = bench_device(device, target="data")
    sizes: dict[str, Any] = dict(min_px=64, max_px=256)
    if smoke:
        classes, images, image_size, batch, workers, epochs = (SMOKE[k] for k in (
            "classes", "images", "image_size", "batch", "workers", "epochs"))
        model, repeats, warmup = SMOKE["model"], SMOKE["repeats"], SMOKE["warmup"]
        sizes = dict(min_px=SMOKE["min_px"], max_px=SMOKE["max_px"])
    name = dataset or "imagenet"
    cls = DATASETS.get(name)
    if cls.in_memory or not cls.needs_root:
        raise UserError(f"bench data: {name!r} is held in memory (the fast path, no loader to time); "
                        "`tfbench bench harness` times it")
    batch = batch or (GPU_BATCH if dev.type == "cuda" else CPU_BATCH)
    model = model or cls.default_model
    used_threads = set_threads(threads, dev)
    with tempfile.TemporaryDirectory(prefix="tfbench-data-") as tmp:
        if dataset is None:
            root = str(make_jpeg_tree(Path(tmp), classes=classes, images=images, **sizes))
        params: dict[str, Any] = {"root": root} if root else {}
        if image_size:
            params["image_size"] = image_size
        bundle = build_dataset(name, params)
        size = bundle.input_size
        loaders = {f"ours, device path (uint8, normalised on {dev.type})":
                   our_loader(name, params, bundle, fast_path=True, batch=batch, workers=workers, device=dev),
                   "ours, torchvision path (float in the workers; before)":
                   our_loader(name, params, bundle, fast_path=False, batch=batch, workers=workers, device=dev)}
        train_root = Path(bundle.root or "") / "train"
        if train_root.is_dir():
            loaders["timm create_loader (PrefetchLoader)"] = timm_loader(
                train_root, size=size, batch=batch, workers=workers, mean=bundle.mean, std=bundle.std, device=dev)
        first = {k: time_epoch(make, dev) for k, make in loaders.items()}
        steady: dict[str, list[tuple[int, float]]] = {k: [] for k in loaders}
        for _ in range(epochs):
            for k, make in loaders.items():
                steady[k].append(time_epoch(make, dev))
        rate = step_rate(model=model, num_classes=bundle.num_classes, num_train=len(bundle.train_labels),
                         size=size, batch=batch, device=dev, repeats=repeats, warmup=warmup)
    rows = []
    for k in loaders:
        rates = [n / s for n, s in steady[k]]
        n0, s0 = first[k]
        rows.append({"loader": k, "images_per_s": median(rates), "best_images_per_s": max(rates),
                     "first_epoch_images_per_s": n0 / s0, "images_per_epoch": steady[k][0][0]})
    return DataBench(rows=rows, step_images_per_s=rate, dataset=GENERATED if dataset is None else name,
                     train_images=len(bundle.train_labels), image_size=size, batch=batch, workers=workers,
                     epochs=epochs, model=model, smoke=smoke, pixels=(sizes["min_px"], sizes["max_px"]),
                     machine=machine_line(dev, used_threads if dev.type == "cpu" else None),
                     seconds=time.perf_counter() - t_start)


def rate_text(v: float) -> str:
    """Images/s: whole numbers from 100 on, three significant digits below (a CPU step is about 1)."""
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def bottleneck(loader_rate: float, step_rate: float) -> str:
    if loader_rate >= step_rate:
        return f"the model step (the loader delivers {loader_rate / step_rate:.2f}x what the step consumes)"
    return f"the loader (it delivers {loader_rate / step_rate:.2f}x what the step consumes)"


def format_bench_data(res: DataBench, tablefmt: str = "github") -> str:
    timm = next((r for r in res.rows if r["loader"].startswith("timm")), None)
    headers = ["loader", "images/s (median epoch)", "best epoch", "first epoch (incl. worker start-up)",
               "x timm", "x step"]
    table = [(r["loader"], rate_text(r["images_per_s"]), rate_text(r["best_images_per_s"]),
              rate_text(r["first_epoch_images_per_s"]),
              f"{r['images_per_s'] / timm['images_per_s']:.2f}" if timm else "n/a",
              f"{r['images_per_s'] / res.step_images_per_s:.2f}") for r in res.rows]
    what = (f"a generated folder of JPEGs (ImageNet layout, {res.pixels[0]}-{res.pixels[1]} px)" if res.dataset == GENERATED
            else f"data set {res.dataset}")
    head = (f"training loader vs step: {what}, {res.train_images} training images at {res.image_size}x{res.image_size}, "
            f"batch {res.batch}, {res.workers} worker(s); median of {res.epochs} alternating epochs after a first "
            f"epoch each{' (SMOKE: sizes too small to mean anything)' if res.smoke else ''}\n{res.machine}\n")
    ours = res.rows[0]
    load = load_average()
    foot = [f"model step: {res.model}, CE, batch {res.batch}: {rate_text(res.step_images_per_s)} images/s "
            f"(bench step's timing, median)",
            f"bottleneck with the default loader: {bottleneck(ours['images_per_s'], res.step_images_per_s)}",
            f"took {res.seconds:.0f} s" + (f"; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                                           if load else "")]
    return head + tabulate(table, headers=headers, tablefmt=tablefmt, disable_numparse=True) + "\n" + "\n".join(foot)


__all__ = ["DataBench", "bench_data", "bottleneck", "format_bench_data", "make_jpeg_tree", "time_epoch"]
