"""`tfbench bench sweep`: trials per hour of a small sweep (digits, tiny_cnn, short trials) run with 1 and
with 2 concurrent trials, one torch thread each, through the real runner (`harness.sweep.runner.run_sweep` on Ray
Tune) in a temporary results folder.

Two throughputs per concurrency level:
- end to end: trials / the wall time of `run_sweep` (Ray start and stop, Tune's set-up, the worker
  processes' imports, every trial, trials.csv, summary tables and plots): what a user waits for;
- steady state: trials / (last trial's result.json written - first trial's config.json written), read from
  the trial folders: the trials themselves and Tune's scheduling between them, without the start-up.
Ray's own start-up (`ray.init` with the runner's settings, then `ray.shutdown`) is timed on its own once.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tabulate import tabulate

from harness.bench.common import load_average, machine_line, verdict
from harness.errors import UserError
from harness.folders import TrialFolder

TARGET_SPEEDUP = 1.7  # the goal: at least 1.7x the trials per hour with 2 concurrent trials on 2 cores


def sweep_file(folder: Path, *, name: str, trials: int, epochs: int, concurrent: int, method: str,
               max_steps: int = 0) -> Path:
    """A sweep of `trials` seeds of one method on digits with tiny_cnn (the quickstart's settings)."""
    train: dict[str, Any] = {"epochs": epochs, "batch_size": 64, "lr": 0.05}
    if max_steps:
        train["max_steps_per_epoch"] = max_steps
    doc = {"schema_version": 1, "name": name, "methods": [method], "datasets": ["digits"], "models": ["tiny_cnn"],
           "seeds": {"count": trials}, "train": train,
           "resources": {"cpus_per_trial": 1, "max_concurrent": concurrent}, "retries": 0}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def steady_window(folder: Path) -> tuple[float, float, list[float]]:
    """(first trial's start, last trial's end, as epoch seconds; each trial's own wall time), from the files
    every trial writes: config.json when it starts training, result.json when it is done."""
    trials = sorted(p for p in (folder / "trials").iterdir() if p.is_dir())
    starts = [(t / TrialFolder.CONFIG).stat().st_mtime for t in trials]
    ends = [(t / TrialFolder.RESULT).stat().st_mtime for t in trials]
    walls = [json.loads((t / TrialFolder.RESULT).read_text())["wall_time_s"] for t in trials]
    return min(starts), max(ends), walls


def ray_startup() -> tuple[float, float]:
    """(seconds of `ray.init` with the runner's settings, seconds of `ray.shutdown`)."""
    import ray

    from harness.sweep.cluster import start_local

    if ray.is_initialized():
        raise UserError("bench sweep: Ray is already running in this process; run the benchmark in a fresh one")
    t0 = time.perf_counter()
    start_local(False)  # what a sweep's TuneSession starts on this machine
    t1 = time.perf_counter()
    ray.shutdown()
    return t1 - t0, time.perf_counter() - t1


@dataclass
class SweepBench:
    rows: list[dict[str, Any]]  # per concurrency: trials, wall_s, steady_s, tph_e2e, tph_steady, mean_trial_s
    speedup_e2e: float | None
    speedup_steady: float | None
    ray_init_s: float | None
    ray_shutdown_s: float | None
    trials: int
    epochs: int
    method: str
    smoke: bool
    machine: str
    load_end: tuple[float, float, float] | None
    seconds: float


def bench_sweep(*, trials: int = 4, epochs: int = 20, concurrency: Sequence[int] = (1, 2), method: str = "ce",
                smoke: bool = False, measure_ray: bool = True, max_steps: int = 0) -> SweepBench:
    """Trials per hour at each concurrency level and the speed-up of the last level over the first.

    `smoke`: 2 trials of 1 epoch capped at 2 steps, both levels, no separate Ray start-up timing (a test
    that keeps this code working, not a measurement).
    """
    import torch

    from harness.config.sweep_file import load_sweep
    from harness.sweep.runner import run_sweep

    t_start = time.perf_counter()
    if smoke:
        trials, epochs, max_steps, measure_ray = 2, 1, 2, False
    if trials < 1 or epochs < 1 or not concurrency or min(concurrency) < 1:
        raise UserError(f"bench sweep: trials, epochs and every concurrency level must be >= 1, got {trials}, "
                        f"{epochs}, {list(concurrency)}")
    machine = machine_line(torch.device("cpu"), 1)
    ray_init = ray_down = None
    if measure_ray:
        ray_init, ray_down = ray_startup()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tfbench-bench-sweep-") as tmp:
        root = Path(tmp)
        for k in concurrency:
            name = f"bench-sweep-c{k}"
            sweep = load_sweep(sweep_file(root, name=name, trials=trials, epochs=epochs, concurrent=k, method=method,
                                          max_steps=max_steps))
            log = io.StringIO()
            t0 = time.time()  # wall clock: compared with the trial files' modification times
            with contextlib.redirect_stdout(log):
                code = run_sweep(sweep, root / "results", progress=False)
            t1 = time.time()
            if code != 0:
                raise RuntimeError(f"bench sweep: the sweep at concurrency {k} had failed trials:\n{log.getvalue()}")
            first, last, walls = steady_window(root / "results" / name)
            wall, steady = t1 - t0, last - first
            rows.append({"concurrent": k, "trials": trials, "wall_s": wall, "steady_s": steady,
                         "tph_e2e": trials / wall * 3600, "tph_steady": trials / steady * 3600,
                         "mean_trial_s": sum(walls) / len(walls), "startup_s": first - t0, "wrapup_s": t1 - last,
                         "load_end": (load_average() or (float("nan"),))[0]})
    first, last = rows[0], rows[-1]
    multi = len(rows) > 1
    return SweepBench(rows=rows, speedup_e2e=last["tph_e2e"] / first["tph_e2e"] if multi else None,
                      speedup_steady=last["tph_steady"] / first["tph_steady"] if multi else None,
                      ray_init_s=ray_init, ray_shutdown_s=ray_down, trials=trials, epochs=epochs, method=method,
                      smoke=smoke, machine=machine, load_end=load_average(), seconds=time.perf_counter() - t_start)


def format_bench_sweep(res: SweepBench, tablefmt: str = "github") -> str:
    head = (f"sweep throughput: {res.trials} trials ({res.method}, digits, tiny_cnn, {res.epochs} epoch(s), batch 64, "
            f"checkpoint every epoch) through run_sweep on Ray Tune, 1 CPU and 1 torch thread per trial"
            f"{' (SMOKE: sizes too small to mean anything)' if res.smoke else ''}\n{res.machine}\n")
    table = [(r["concurrent"], f"{r['wall_s']:.1f}", f"{r['tph_e2e']:.0f}", f"{r['steady_s']:.1f}",
              f"{r['tph_steady']:.0f}", f"{r['mean_trial_s']:.1f}", f"{r['startup_s']:.1f}", f"{r['wrapup_s']:.1f}",
              f"{r['load_end']:.2f}") for r in res.rows]
    headers = ["concurrent trials", "run_sweep wall s", "trials/h end to end", "steady s", "trials/h steady",
               "mean trial s", "start-up s", "wrap-up s", "load (1 min) after"]
    foot = []
    if res.ray_init_s is not None:
        foot.append(f"Ray start-up on its own: ray.init {res.ray_init_s:.1f} s, ray.shutdown {res.ray_shutdown_s:.1f} s "
                    f"(part of every run_sweep's end-to-end wall time)")
    foot.append("steady = first trial's config.json to last trial's result.json; start-up = run_sweep's start to "
                "the first config.json (Ray start, Tune set-up, worker processes and their imports, the first "
                "dataset and model); wrap-up = the last result.json to run_sweep's return (Tune's end, Ray "
                "shutdown, trials.csv, summary tables, plots)")
    base = res.rows[0]
    for r in res.rows[1:]:
        slow = r["mean_trial_s"] / base["mean_trial_s"]
        if slow > 1.15 and not res.smoke:  # one thread per trial on its own core should barely slow a trial
            foot.append(f"warning: a trial took x{slow:.2f} as long with {r['concurrent']} concurrent as with "
                        f"{base['concurrent']}: the trials did not get a core each (other work on this machine? "
                        f"{os.cpu_count()} cores); rerun when the load is low")
    load = res.load_end
    foot.append(f"took {res.seconds:.0f} s" + (f"; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
                                               if load else ""))
    if res.speedup_steady is not None and res.smoke:
        foot.append(f"speed-up with {res.rows[-1]['concurrent']} concurrent: steady x{res.speedup_steady:.2f}, end to end "
                    f"x{res.speedup_e2e:.2f} (smoke: not judged)")
    elif res.speedup_steady is not None:
        k = res.rows[-1]["concurrent"]
        foot.append(f"reference: >= {TARGET_SPEEDUP:g}x trials/h with {k} concurrent: steady x{res.speedup_steady:.2f} -> "
                    f"{verdict(res.speedup_steady >= TARGET_SPEEDUP)}; end to end x{res.speedup_e2e:.2f} -> "
                    f"{verdict(res.speedup_e2e >= TARGET_SPEEDUP)}")
    return head + tabulate(table, headers=headers, tablefmt=tablefmt, disable_numparse=True) + "\n" + "\n".join(foot)


__all__ = ["SweepBench", "bench_sweep", "format_bench_sweep", "ray_startup", "steady_window", "sweep_file"]
