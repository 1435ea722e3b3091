"""The GPU check of the performance issue, as one script: `python -m harness.bench.gpu` (or `tfbench bench gpu`).

1. Images per second of training the CIFAR pre-activation ResNet-18 on a CIFAR-100-sized in-memory set
   (50,000 generated 32x32 images, 100 classes), with CE and with Zipf's LS (the CIFAR-100 preset: extra
   dense layer, bilinear vote upsampling), on the fast path and on the DataLoader path, bf16 autocast and
   channels_last, through `train_trial` itself: the numbers are result.json's images_per_s, which exclude
   the warm-up steps and evaluation and are synchronised at the epoch boundaries.
2. A Zipf training epoch with `train.sync_debug` on: torch.cuda.set_sync_debug_mode("error") around every
   training step, so any host synchronisation inside the step raises.
Prints one table and writes it (with the environment) to --out.
"""
from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from pathlib import Path

CIFAR_LIKE = dict(num_classes=100, num_superclasses=20, image_size=32, channels=3, train_per_class=500,
                  val_per_class=10, crop_padding=4, flip=True)


def run(steps: int = 150, epochs: int = 2, workers: int = 8, compile_: bool = False, out: Path | None = None,
        methods: tuple[str, ...] = ("ce", "zipf"), *, device: str = "cuda", dataset_params: dict | None = None,
        model: str = "cifar_preact_resnet18") -> list[dict]:
    """The table's rows. `device`, `dataset_params` and `model` exist for the CPU smoke test."""
    from tabulate import tabulate

    import harness.data
    from harness.config.resolve import resolve_trial
    from harness.io import environment
    from harness.train.loop import train_trial

    # generate the 50,000 images once for every row (train_trial looks the factory up at call time)
    build = harness.data.build_dataset

    @functools.lru_cache(maxsize=1)
    def build_once(name: str, items: tuple) -> object:
        return build(name, dict(items))

    harness.data.build_dataset = lambda name, params=None: build_once(name, tuple(sorted((params or {}).items())))
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for fast in (True, False):
                for method in methods:
                    spec = resolve_trial(method=method, dataset="synthetic", model=model, seed=0,
                                         dataset_params=dataset_params or CIFAR_LIKE,
                                         train=dict(epochs=epochs, batch_size=128, fast_path=fast, checkpoint=False,
                                                    max_steps_per_epoch=steps, num_workers=0 if fast else workers,
                                                    device=device, compile=compile_))
                    t0 = time.time()
                    r = train_trial(spec, Path(tmp) / f"{method}-{fast}", log=lambda s: None)
                    rows.append({"method": method, "path": "fast (in-memory)" if fast else f"DataLoader ({workers} workers)",
                                 "images_per_s": r["images_per_s"], "step_ms": r["step_time_s"] * 1e3,
                                 "peak_mem_MiB": r["peak_mem_bytes"] / 2**20, "wall_s": time.time() - t0})
            # the proof: a whole Zipf epoch (fast path) with every step under set_sync_debug_mode("error")
            spec = resolve_trial(method="zipf", dataset="synthetic", model=model, seed=0,
                                 dataset_params=dataset_params or CIFAR_LIKE,
                                 train=dict(epochs=1, batch_size=128, checkpoint=False, max_steps_per_epoch=50,
                                            device=device, sync_debug=True))
            try:
                train_trial(spec, Path(tmp) / "sync", log=lambda s: None)
                sync = ("no host synchronisation in 50 Zipf training steps (set_sync_debug_mode('error'))"
                        if device.startswith("cuda") else "host synchronisation: not checked (no CUDA device)")
            except RuntimeError as e:
                sync = f"host synchronisation inside the step: {str(e).splitlines()[0]}"
    finally:
        harness.data.build_dataset = build

    ce = {r["path"]: r["images_per_s"] for r in rows if r["method"] == "ce"}
    for r in rows:
        r["vs_ce"] = r["images_per_s"] / ce[r["path"]]
    table = tabulate([[r["method"], r["path"], f"{r['images_per_s']:,.0f}", f"{r['step_ms']:.2f}",
                       f"{r['vs_ce']:.3f}", f"{r['peak_mem_MiB']:,.0f}"] for r in rows],
                     headers=["method", "data path", "images/s", "ms/step", "x CE throughput", "peak MiB"],
                     tablefmt="github")
    env = environment(device)
    fast_ce = ce.get("fast (in-memory)", 0)
    footer = [f"card: {env.get('gpu')}, torch {env['torch']}, batch 128, bf16 autocast, channels_last, "
              f"{steps} steps x {epochs} epochs per row (first 3 steps excluded), compile={compile_}",
              f"200 CIFAR-100 epochs at the fast-path CE rate: {200 * 50000 / fast_ce / 60:.1f} min" if fast_ce else "",
              sync]
    print(table)
    print("\n".join(f for f in footer if f))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_gpu.md").write_text(table + "\n\n" + "\n".join(footer) + "\n")
        (out / "bench_gpu.json").write_text(json.dumps({"rows": rows, "sync": sync, "env": env}, indent=2))
    return rows


def main() -> None:
    from harness.cli import main as cli

    raise SystemExit(cli(["bench", "gpu", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
