"""A sweep's resources against the local machine, checked before Ray starts or anything is written."""
from __future__ import annotations

import os
from typing import Any

from harness.config.problems import Problems

DRIVER_CPU = 0.01  # what the runner reserves for a data-parallel trial's Ray Train driver (harness/sweep/runner.py)


def check_local_resources(sweep: Any, cpu_count: int | None = None, gpu_count: int | None = None) -> None:
    """One line per resource a single trial needs beyond this machine (no --address: Ray would start
    locally and wait for ever, or fail after starting). Raises SweepError."""
    r = sweep.resources
    P = Problems(str(sweep.source), getattr(sweep, "lines", {}))
    workers = r.workers_per_trial
    have_cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    need_cpus = r.cpus_per_trial * workers + (DRIVER_CPU if workers > 1 else 0)
    if need_cpus > have_cpus:
        how = f"{r.cpus_per_trial:g} x {workers} workers + {DRIVER_CPU} for the driver = {need_cpus:g}" if workers > 1 \
            else f"{need_cpus:g}"
        P.add(("resources", "cpus_per_trial"), f"one trial needs {how} CPUs but this machine has {have_cpus}; "
                                               f"allowed: at most {have_cpus} here, or attach to a cluster (--address)")
    need_gpus = r.gpus_per_trial * workers
    if need_gpus > 0:
        if gpu_count is None:
            import torch

            gpu_count = torch.cuda.device_count()
        if need_gpus > gpu_count:
            P.add(("resources", "gpus_per_trial"),
                  f"one trial needs {need_gpus:g} GPUs but this machine has "
                  f"{'no visible GPU' if gpu_count == 0 else gpu_count}; allowed: at most {gpu_count} here (0 for CPU), or "
                  f"attach to a cluster with GPUs (--address)")
    P.raise_if_any()
