"""`tfbench bench gpu --suite`: the prepared GPU check, one call on a lent GPU machine (meant to fit in 8 minutes
on one H100; not yet timed on a GPU: each section reports its seconds), written as markdown and JSON. Built
and tested on a CPU in its smoke form (`--device cpu --smoke`).

Sections, each timed, each failing on its own (a broken section is one line in the report, the others
still run: a GPU lease is too short to lose to one error):
1. cuda tests: the test files whose CUDA cases only a GPU runs (pytest in a subprocess, from the checkout).
2. losses: CE and Zipf's LS alone at the CIFAR shape, eager and compiled (harness.bench.gpu).
3. steps: the training step of every built-in method, eager and compiled, bf16 autocast, in throughput
   mode (`tfbench bench step`'s steps back to back, one synchronisation per window), with its ratio to CE.
4. deterministic: CE's eager step with `train.deterministic` (no cuDNN autotuning, no TF32) against the
   default backends: what determinism costs.
5. sweep: a 2-epoch synthetic CIFAR-shaped sweep (50,000 32x32 images, 100 classes) of the seven methods,
   compiled, two trials per GPU, through the real runner; per trial the wall time split into training
   steps, evaluation, checkpoint (blocking part) and start-up, and the sweep's end-to-end wall time
   against the sum of its trials' steps.
6. data: `tfbench bench data` on a generated folder of JPEGs (the file loader against the model's step).
7. sync: a Zipf epoch under `train.sync_debug`, eager and compiled (any host synchronisation raises).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

# the test files with CUDA-only cases (skipped on a CPU); the smoke form runs one that needs no GPU
CUDA_TESTS = ("tests/train/test_backends.py", "tests/methods/test_zipf_compiled.py", "tests/train/test_compile.py",
              "tests/data/test_fastdata.py", "tests/methods/test_method_zipf.py", "tests/methods/test_method_cskd.py")
SMOKE_TESTS = ("tests/train/test_backends.py",)
# the parts of a trial's wall time that result.json records (docs/results.md): they add up to wall_time_s;
# startup_s (launch to the first step) comes before it
TIME_PARTS = ("steps_time_s", "eval_time_s", "checkpoint_time_s", "other_time_s")
SECTIONS = ("cuda_tests", "losses", "steps", "deterministic", "sweep", "data", "sync")


def run_suite(*, device: str = "cuda", smoke: bool = False, out: Path | None = None,
              sections: tuple[str, ...] = SECTIONS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every section's rows (or its error), with the environment and each section's seconds."""
    from harness.io import environment

    report: dict[str, Any] = {"env": environment(device), "device": device, "smoke": smoke, "sections": {}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfbench-suite-") as tmp:
        for name in sections:
            log(f"suite: {name} ...")
            t0 = time.perf_counter()
            try:
                rows = RUNNERS[name](device=device, smoke=smoke, tmp=Path(tmp))
                entry = {"rows": rows}
            except Exception as e:  # noqa: BLE001  one section's failure is a line of the report, not the end
                entry = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300],
                         "traceback": traceback.format_exc()[-4000:]}
            entry["seconds"] = time.perf_counter() - t0
            report["sections"][name] = entry
            log(f"suite: {name} {'failed: ' + entry['error'] if 'error' in entry else 'done'} "
                f"({entry['seconds']:.0f} s)")
    report["seconds"] = time.perf_counter() - t_all
    text = format_suite(report)
    if out is not None:
        from harness.io import atomic_write_json, atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "suite.md", text + "\n")
        atomic_write_json(out / "suite.json", report)
    return report


# --- the sections ------------------------------------------------------------------------------------------

def _cuda_tests(*, device: str, smoke: bool, tmp: Path) -> list[dict]:
    from harness.io import checkout_root

    root = checkout_root()
    files = [f for f in (SMOKE_TESTS if smoke else CUDA_TESTS) if (root / f).exists()]
    if not files:
        raise RuntimeError(f"no test files under {root} (the suite runs its tests from a checkout)")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow", *files]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=False)
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    return [{"files": len(files), "exit_code": done.returncode, "summary": last, **counts,
             "failures": [line for line in done.stdout.splitlines() if line.startswith("FAILED")][:20]}]


def _losses(*, device: str, smoke: bool, tmp: Path) -> list[dict]:
    from harness.bench.gpu import loss_rows

    # compiling on a CPU takes minutes: the smoke form checks the eager path of the code
    return loss_rows(device, 2 if smoke else 50, ("eager",) if smoke else ("eager", "compiled"))


def _step_rows(device: str, smoke: bool, *, compile: bool, methods: list[str] | None = None) -> list[dict]:
    from harness.bench.step import bench_step

    res = bench_step(device=device, smoke=smoke, methods=methods, compile=compile, memory=False,
                     repeats=10, warmup=3, window=10)
    return [{"method": r["method"], "mode": "compiled" if compile else "eager", "batch": res.batch,
             "ms": r["ms"], "images_per_s": r["images_per_s"], "x_ce": r["x_ce"], "finite": r["finite"]}
            for r in res.rows]


def _steps(*, device: str, smoke: bool, tmp: Path) -> list[dict]:
    from harness.bench.gpu import ALL_METHODS

    # the seven of the paper's comparison: with each compiled once per process, the suite keeps to its budget
    rows = _step_rows(device, smoke, compile=False, methods=list(ALL_METHODS))
    if not smoke:
        rows += _step_rows(device, smoke, compile=True, methods=list(ALL_METHODS))
    return rows


def _deterministic(*, device: str, smoke: bool, tmp: Path) -> list[dict]:
    import torch

    from harness.train.device import configure_backends

    dev = torch.device(device)
    rows = []
    try:
        for deterministic in (False, True):
            configure_backends(dev, deterministic=deterministic)
            row = _step_rows(device, smoke, compile=False, methods=["ce"])[0]
            rows.append({**row, "deterministic": deterministic})
    finally:
        configure_backends(dev, deterministic=False)
    rows[1]["x_default"] = rows[1]["ms"] / rows[0]["ms"]
    return rows


def sweep_doc(*, smoke: bool, device: str) -> dict[str, Any]:
    """The suite's sweep: the seven methods on a CIFAR-shaped synthetic set, 2 epochs, compiled, two trials
    per GPU; the smoke form: 1 epoch of a tiny set, eager, two trials at once on the CPU."""
    from harness.bench.gpu import ALL_METHODS, CIFAR_LIKE

    gpu = device.startswith("cuda")
    data = dict(CIFAR_LIKE) if not smoke else dict(num_classes=4, num_superclasses=2, image_size=8,
                                                   train_per_class=12, val_per_class=4)
    train: dict[str, Any] = {"epochs": 1 if smoke else 2, "batch_size": 16 if smoke else 128, "protocol": "paper",
                             "compile": gpu and not smoke, "device": "cuda" if gpu else "cpu"}
    return {"schema_version": 1, "name": "gpu-suite-sweep", "methods": list(ALL_METHODS),
            "datasets": [{"name": "synthetic", "params": data}],
            "models": ["tiny_cnn" if smoke else "cifar_preact_resnet18"], "seeds": [0], "train": train,
            "resources": {"cpus_per_trial": 1 if smoke else 4, "gpus_per_trial": 0.5 if gpu else 0,
                          "max_concurrent": 2},
            "retries": 0}


def _sweep(*, device: str, smoke: bool, tmp: Path) -> list[dict]:
    from harness.config.sweep_file import load_sweep
    from harness.folders import TrialFolder
    from harness.sweep.runner import run_sweep

    path = tmp / "gpu-suite-sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_doc(smoke=smoke, device=device), sort_keys=False))
    t0 = time.perf_counter()
    # the smoke form keeps quiet: a test's captured stdout cannot travel to Ray's processes
    code = run_sweep(load_sweep(path), tmp / "results", progress="off" if smoke else "plain")
    wall = time.perf_counter() - t0
    rows = []
    for trial in sorted((tmp / "results" / "gpu-suite-sweep" / "trials").iterdir()):
        result = json.loads((trial / TrialFolder.RESULT).read_text()) if (trial / TrialFolder.RESULT).exists() else {}
        spec = json.loads((trial / TrialFolder.CONFIG).read_text())["spec"]
        rows.append({"method": spec["method"], "status": result.get("status", "not finished"),
                     "images_per_s": result.get("images_per_s"), "startup_s": result.get("startup_s"),
                     "wall_time_s": result.get("wall_time_s"), **{k: result.get(k) for k in TIME_PARTS}})
    # the sweep's end-to-end wall against its trials' training steps, which run two at a time per GPU
    steps = sum(r["steps_time_s"] or 0 for r in rows)
    rows.append({"method": "(sweep, end to end)", "status": f"exit {code}", "wall_time_s": wall,
                 "steps_time_s": steps})
    return rows


def _data(*, device: str, smoke: bool, tmp: Path) -> list[dict]:
    from harness.bench.data import bench_data

    res = bench_data(device=device, smoke=smoke, workers=2 if smoke else 8, epochs=2 if smoke else 3)
    return [{"what": r["loader"], "images_per_s": r["images_per_s"]} for r in res.rows] + [
        {"what": f"training step ({res.model}, batch {res.batch}, {res.image_size} px)",
         "images_per_s": res.step_images_per_s}]


def _sync(*, device: str, smoke: bool, tmp: Path) -> list[dict]:
    from harness.bench.gpu import CIFAR_LIKE, sync_checks

    return [{"line": line} for line in sync_checks(tmp, device, CIFAR_LIKE, "cifar_preact_resnet18",
                                                    ("eager",) if smoke else ("eager", "compiled"))]


RUNNERS: dict[str, Callable[..., list[dict]]] = {
    "cuda_tests": _cuda_tests, "losses": _losses, "steps": _steps, "deterministic": _deterministic,
    "sweep": _sweep, "data": _data, "sync": _sync}


# --- the report ------------------------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def format_suite(report: dict[str, Any]) -> str:
    from tabulate import tabulate

    env = report["env"]
    lines = [f"# tfbench GPU suite{' (SMOKE: tiny sizes, measures nothing)' if report['smoke'] else ''}", "",
             f"device {report['device']} ({env.get('gpu') or 'no GPU'}), torch {env['torch']}, git {env.get('git')}, "
             f"{report['seconds']:.0f} s in all"]
    for name, entry in report["sections"].items():
        lines += ["", f"## {name} ({entry['seconds']:.0f} s)", ""]
        if "error" in entry:
            lines.append(f"failed: {entry['error']}")
            continue
        rows = entry["rows"]
        if not rows:
            lines.append("(nothing)")
            continue
        headers = list(dict.fromkeys(k for r in rows for k in r if k not in ("failures",)))
        lines.append(tabulate([[_cell(r.get(h)) for h in headers] for r in rows], headers=headers,
                              tablefmt="github", disable_numparse=True))
        for r in rows:
            lines += [f"- {f}" for f in r.get("failures", [])]
    return "\n".join(lines)


__all__ = ["CUDA_TESTS", "SECTIONS", "TIME_PARTS", "format_suite", "run_suite", "sweep_doc"]
