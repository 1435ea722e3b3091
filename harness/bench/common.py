"""Shared pieces of the `tfbench bench` targets: device and thread set-up, the machine line every table
carries, and robust summaries of repeated timings.

The targets' command line is harness/cli/bench.py (TARGETS); the benchmarks here are plain functions.
`sync` is the training loop's own CUDA synchronisation (harness.train.device), so both time alike.
"""
from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence

import torch

from harness.train.device import sync  # noqa: F401  (the benchmarks' one sync: the training loop's)


def bench_device(name: str, *, target: str) -> torch.device:
    """auto -> cuda when visible, else cpu; the harness's one resolver, with the benchmark named in errors."""
    from harness.train.device import resolve_device

    return resolve_device(name, what=f"bench {target}: device")


def set_threads(threads: int, device: torch.device) -> int:
    """Torch's intra-op threads for a CPU benchmark (0 keeps torch's default); returns the count in use."""
    if device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # not every platform has it
        return None


def machine_line(device: torch.device, threads: int | None = None) -> str:
    """One line that says where a table was measured: the device, cores, torch threads, load, versions."""
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        if threads is not None:
            where += f", {threads} torch thread{'s' if threads != 1 else ''}"
    load = load_average()
    load_text = f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)" if load else ""
    return f"measured on {where}; torch {torch.__version__}{load_text}"


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def fmt_mib(n: int | float | None) -> str:
    """MiB with one decimal (a column of similar sizes stays comparable), or 'n/a' where not measured."""
    return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"


def verdict(ok: bool | None) -> str:
    """Where a measurement lies against its reference figure (docs/benchmarks.md): a statement, not a pass mark."""
    return "n/a" if ok is None else ("inside" if ok else "outside")


__all__ = ["bench_device", "fmt_mib", "load_average", "machine_line", "median", "set_threads", "sync", "verdict"]
