"""`tfbench bench step --sweep FILE`, and the cost step of `tfbench run`: the controlled measurement of a sweep's
own training steps, once per (data set, model), cached in results/<sweep>/costs/ (harness/results/costs.py reads it).

What is measured, per (data set, model) cell: every step configuration of the sweep's trials there
(`results.costs.step_config`: method and parameters, data set, model, train settings; seeds and epochs do not
matter), plus CE in the same settings when the sweep has none: the reference every ratio is over. Each is built
as its trial builds it: `build_parts` (the trial's data set, `create_model` with the data set's classes, channels
and input size, `build_method` with its resolved parameters and the training split's size), `freeze_backbone`
where the trial freezes, and the loop's own step rig (`build_step_rig`: optimiser, amp, compile), mixer and EMA.
The step is `train_step` itself (harness/bench/step.py's `run_step`) on a fixed random batch of the trial's shape
(the per-worker batch of the trial's batch size, the data set's channels and input size), the data pipeline left
out as in `bench step`.

Timing is `bench step`'s throughput mode: the configurations take turns (round-robin), each round `window`
steps of a configuration back to back between two synchronisations, warm-up rounds first, the median of the
timed rounds. Where a round would make the measurement longer than `budget_s`, the window and then the rounds
shrink (never below one step and `MIN_REPEATS` rounds); the file records what was run. Threads: the trial's
(`train.threads`, else the sweep's `cpus_per_trial`, as the trainable sets them). Device: the trial's
(`train.device`; `auto` is the GPU only where the sweep gives trials one). Peak memory: on CUDA
`max_memory_allocated` over building a configuration and two steps, minus what was allocated before; on CPU a
forked process per configuration (one thread), its peak RSS over the same minus its RSS before: as `bench
step`'s fresh process, without paying the imports again.

A cell's file is reused when the same configurations on the same device type and threads are asked again
(`results.costs.cell_key`), remeasured when they changed or `force` is given. Files are written atomically,
only in the results folder's own costs/ place (harness/outputs.py).
"""
from __future__ import annotations

import datetime
import json
import multiprocessing
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from harness.bench.common import fmt_mib, load_average, machine_line, sync
from harness.bench.step import Case, case_on_rig, page_in_kernels, round_robin, run_step
from harness.config.spec import TrialSpec
from harness.errors import UserError
from harness.io import atomic_write_text, git_revision
from harness.results import costs as store
from harness.results.render import format_ratio, human_bytes
from harness.train import loop
from harness.train.device import resolve_device, seed_everything
from harness.train.memory import peak_rss, reset_peak_rss, rss_now

REPEATS, WARMUP, WINDOW = 20, 5, 10  # bench step's
BUDGET_S = 10.0         # a cell's rounds, at most about this long (the window, then the rounds shrink): seconds for
                        # the quickstart; `bench step --sweep --budget` gives a measurement more time
MIN_REPEATS = 5
PROBE_TIMEOUT_S = 600.0


@dataclass
class Config:
    """One step configuration of a cell: the trial that stands for it (its first seed) and the trials it covers."""

    key: str
    spec: TrialSpec
    reference: str
    trials: list[str] = field(default_factory=list)

    label: str = ""  # the method, plus the parameters that tell its configurations in the cell apart


def _label(configs: list[Config]) -> None:
    """Each configuration's label: its method, plus the parameters that differ between that method's
    configurations of the cell (as the tables label a row)."""
    for c in configs:
        same = [o.spec.method_params for o in configs if o.spec.method == c.spec.method]
        varying = sorted({k for p in same for k in p if any(q.get(k) != p.get(k) for q in same)})
        params = ", ".join(f"{k}={c.spec.method_params.get(k)}" for k in varying)
        c.label = c.spec.method + (f" ({params})" if params else "")


def reference_spec(spec: TrialSpec) -> TrialSpec:
    """CE in the trial's data set, model and train settings (`results.costs.reference_config`)."""
    return replace(spec, method=store.REFERENCE, method_params={}, method_source="")


def plan_cells(specs: Sequence[TrialSpec]) -> dict[tuple[str, str], list[Config]]:
    """(data set label, model) -> its step configurations in the sweep's order, each CE reference first."""
    cells: dict[tuple[str, str], dict[str, Config]] = {}
    for t in specs:
        d = t.to_dict()
        configs = cells.setdefault(store.cell_of(d), {})
        key = store.cost_key(d)
        if key not in configs:
            configs[key] = Config(key, t, store.reference_key(d))
        configs[key].trials.append(t.key())
    out = {}
    for cell, configs in cells.items():
        for c in list(configs.values()):
            if c.reference not in configs:  # the sweep has no CE in these settings: measured as the reference
                configs[c.reference] = Config(c.reference, reference_spec(c.spec), c.reference)
        refs = [c for c in configs.values() if c.key == c.reference]
        out[cell] = refs + [c for c in configs.values() if c.key != c.reference]
        _label(out[cell])
    return out


def trial_device(spec: TrialSpec, gpus_per_trial: float) -> torch.device:
    """The device the trial ran on: `train.device`, where `auto` is CUDA only when the sweep gives trials a GPU
    (Ray hides the GPUs from a trial without one)."""
    name = spec.train.device
    if name == "auto":
        name = "cuda" if gpus_per_trial > 0 else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"the trials ran on {name} (gpus_per_trial {gpus_per_trial:g}, train.device "
                        f"{spec.train.device}); this machine has no CUDA device: measure on a machine like theirs")
    return resolve_device(name, "train.device")


def trial_threads(spec: TrialSpec, cpus_per_trial: float) -> int:
    """The torch threads of the trial: `train.threads`, else the sweep's CPUs per trial (harness/sweep/session.py)."""
    return spec.train.threads or max(1, int(cpus_per_trial))


def build_config_case(spec: TrialSpec, device: torch.device, bundle: Any = None, seed: int = 0) -> Case:
    """The trial's step, built through the trial's own code path (`build_parts`, `build_step_rig`), on a fixed
    random batch of its shape. `bundle`: the data set already built (one per cell)."""
    from harness.train.parts import build_parts
    from harness.train.recipes import make_ema, make_mixer
    from harness.train.transfer import freeze_backbone

    t = spec.train
    seed_everything(spec.seed)  # as build_rig: the same initial weights as the trial
    bundle, model, method = build_parts(spec, device, bundle)
    if t.freeze == "backbone":
        freeze_backbone(model)
    rig = loop.build_step_rig(t, model, method, device)
    case = case_on_rig(spec.method, rig, t, params=dict(spec.method_params), batch=-(-t.batch_size // t.workers),
                       num_classes=bundle.num_classes, num_train=len(bundle.train_labels),
                       input_size=bundle.input_size, in_chans=bundle.in_chans, device=device, seed=seed)
    case.mixer, case.ema = make_mixer(t, bundle.num_classes), make_ema(model, t.ema)
    return case


def _forked_peak(build: Callable[[], Case], timeout: float = PROBE_TIMEOUT_S) -> int:
    """Bytes: a forked process's peak RSS over `build()` and two steps, minus its RSS before (one thread: a
    forked OpenMP pool is not safe to use; the memory of a step barely depends on the threads)."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def probe() -> None:
        try:
            torch.set_num_threads(1)
            page_in_kernels()
            reset_peak_rss()
            before = rss_now()
            case = build()
            for i in range(2):
                run_step(case, step=i)
            send.send(("ok", peak_rss() - before))
        except BaseException as e:  # noqa: BLE001 (the parent reports it)
            send.send(("error", f"{type(e).__name__}: {e}"))

    with warnings.catch_warnings():  # Python warns of fork in a threaded process; the probe uses no other thread
        warnings.simplefilter("ignore", DeprecationWarning)
        proc = ctx.Process(target=probe, daemon=True)
        proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            raise RuntimeError(f"the memory probe did not finish in {timeout:.0f} s")
        kind, value = recv.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    if kind != "ok":
        raise RuntimeError(f"the memory probe failed: {value}")
    return int(value)


def _fit_rounds(step_s: float, *, repeats: int, warmup: int, window: int, budget_s: float) -> tuple[int, int, int]:
    """(repeats, warmup, window) whose rounds take about `budget_s` at most, `step_s` being one step of every
    configuration together: the window shrinks first (a longer step needs fewer back to back), then the rounds."""
    def total(r: int, w: int, n: int) -> float:
        return (r + w) * n * step_s
    while window > 1 and total(repeats, warmup, window) > budget_s:
        window = max(1, window // 2)
    while repeats > MIN_REPEATS and total(repeats, warmup, window) > budget_s:
        repeats -= 1
    warmup = min(warmup, 1) if total(repeats, warmup, window) > budget_s else warmup
    return repeats, warmup, window


def measure_cell(cell: tuple[str, str], configs: list[Config], *, device: torch.device, threads: int,
                 repeats: int = REPEATS, warmup: int = WARMUP, window: int = WINDOW, budget_s: float = BUDGET_S,
                 memory: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The cell's record (results/<sweep>/costs/<dataset>_<model>.json): how it was measured and, per
    configuration, its raw round times, peak memory and state."""
    from harness.data import build_dataset

    started = time.perf_counter()
    first = configs[0].spec
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # as the trainable does, on every device
    where = f"{cell[0]} / {cell[1]}"
    try:
        bundles: dict[str, Any] = {}

        def bundle_of(spec: TrialSpec) -> Any:
            ident = json.dumps([spec.dataset, spec.dataset_params], sort_keys=True, default=str)
            if ident not in bundles:
                bundles[ident] = build_dataset(spec.dataset, dict(spec.dataset_params))
            return bundles[ident]

        peak: dict[str, int | None] = {c.key: None for c in configs}
        forks = "fork" in multiprocessing.get_all_start_methods()
        if memory and device.type == "cpu" and forks:
            log(f"costs: {where}: peak memory of {len(configs)} configurations (a forked process each)")
            for c in configs:
                bundle = bundle_of(c.spec)
                peak[c.key] = _forked_peak(lambda c=c, bundle=bundle: build_config_case(c.spec, device, bundle))
        cases: dict[str, Case] = {}
        for c in configs:
            if device.type == "cuda":
                sync(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            cases[c.key] = build_config_case(c.spec, device, bundle_of(c.spec))
            for i in range(2):  # untimed: the second step is the steady one (momentum buffers exist)
                run_step(cases[c.key], step=i)
            if device.type == "cuda":
                sync(device)
                peak[c.key] = torch.cuda.max_memory_allocated(device) - base if memory else None
        # one step of each, to fit the rounds into the budget
        _, probe = round_robin(cases, warmup=0, repeats=1, window=1)
        repeats, warmup, window = _fit_rounds(sum(v[0] for v in probe.values()), repeats=repeats, warmup=warmup,
                                              window=window, budget_s=budget_s)
        log(f"costs: {where}: timing {len(configs)} configurations round-robin on {device.type}"
            f"{f', {threads} thread(s)' if device.type == 'cpu' else ''}: {warmup} warm-up + {repeats} rounds of "
            f"{window} step(s)")
        _, full = round_robin(cases, warmup=warmup, repeats=repeats, window=window)
        sync(device)
    finally:
        torch.set_num_threads(old_threads)
    rows = []
    for c in configs:
        case = cases[c.key]
        rows.append({"key": c.key, "reference": c.reference, "method": c.spec.method,
                     "method_params": c.spec.method_params, "label": c.label, "trials": c.trials,
                     "batch": int(case.x.shape[0]), "input_shape": list(case.x.shape[1:]),
                     "num_classes": int(bundle_of(c.spec).num_classes), "num_train": int(len(bundle_of(c.spec).train_labels)),
                     "parameters": sum(p.numel() for p in case.rig.params),
                     "round_s": full[c.key], "peak_bytes": peak[c.key],
                     "state_bytes": int(case.rig.method.state_nbytes()), "config": store.step_config(c.spec.to_dict())})
    kind = ("not measured" if not memory else "cuda max_memory_allocated" if device.type == "cuda" else
            "forked-process peak RSS delta (1 thread)" if forks else "not measured (no fork on this system)")
    return {**_head(cell, configs, device, threads), "status": store.MEASURED, "error": None,
            "mode": "throughput", "repeats": repeats, "warmup": warmup, "window": window, "budget_s": budget_s,
            "memory_kind": kind, "seconds": time.perf_counter() - started, "load_average": load_average(),
            "first_trial": first.key(), "configs": rows}


def _head(cell: tuple[str, str], configs: list[Config], device: torch.device, threads: int) -> dict[str, Any]:
    return {"format": store.FORMAT, "written_by": store.COMMAND, "dataset": cell[0], "model": cell[1],
            "key": store.cell_key([c.key for c in configs], device=device.type, threads=threads),
            "device": str(device), "device_name": machine_line(device, None).removeprefix("measured on ").split(";")[0],
            "threads": threads, "torch": torch.__version__, "git": git_revision(),
            "measured_at": datetime.datetime.now().isoformat(timespec="seconds")}


@dataclass
class Outcome:
    cell: tuple[str, str]
    record: dict[str, Any]
    reused: bool
    path: Path | None


def measure_sweep(specs: Sequence[TrialSpec], *, cpus_per_trial: float, gpus_per_trial: float,
                  results_dir: str | Path | None = None, force: bool = False, repeats: int = REPEATS,
                  warmup: int = WARMUP, window: int = WINDOW, budget_s: float = BUDGET_S, memory: bool = True,
                  log: Callable[[str], None] = print) -> list[Outcome]:
    """Every (data set, model) cell of `specs`: its file in `results_dir`/costs/ where the same configurations
    were measured on the same device type and threads (unless `force`), else a new measurement, written there
    (when `results_dir` is given). A cell whose measurement fails gets a file that says why (and is measured
    again next time); the others go on."""
    target = store.costs_target(results_dir) if results_dir is not None else None
    out = []
    for cell, configs in plan_cells(specs).items():
        first = configs[0].spec
        try:
            device = trial_device(first, gpus_per_trial)
            threads = trial_threads(first, cpus_per_trial)
        except UserError as e:
            record = {**_head(cell, configs, torch.device("cpu"), 0), "status": "failed", "error": str(e)}
            out.append(Outcome(cell, record, False, _write(target, cell, record)))
            log(f"costs: {cell[0]} / {cell[1]}: not measured: {e}")
            continue
        key = store.cell_key([c.key for c in configs], device=device.type, threads=threads)
        cached = store.read_cell(results_dir, *cell) if results_dir is not None else None
        if not force and cached and cached.get("key") == key and cached.get("status") == store.MEASURED:
            log(f"costs: {cell[0]} / {cell[1]}: measured before ({cached.get('measured_at')}), reused: "
                f"{Path(results_dir) / store.COSTS / store.cell_file(*cell)}")
            out.append(Outcome(cell, cached, True, Path(results_dir) / store.COSTS / store.cell_file(*cell)))
            continue
        try:
            record = measure_cell(cell, configs, device=device, threads=threads, repeats=repeats, warmup=warmup,
                                  window=window, budget_s=budget_s, memory=memory, log=log)
        except Exception as e:  # noqa: BLE001 (a failed cell says why in its file; the other cells go on)
            record = {**_head(cell, configs, device, threads), "status": "failed", "error": f"{type(e).__name__}: {e}"}
            log(f"costs: {cell[0]} / {cell[1]}: the measurement failed: {record['error']}")
        path = _write(target, cell, record)
        if record["status"] == store.MEASURED:
            log(f"costs: {cell[0]} / {cell[1]}: measured in {record['seconds']:.1f} s"
                + (f" -> {path}" if path else ""))
        out.append(Outcome(cell, record, False, path))
    return out


def _write(target: Any, cell: tuple[str, str], record: dict[str, Any]) -> Path | None:
    if target is None:
        return None
    name = store.cell_file(*cell)
    target.claim([name])
    atomic_write_text(target / name, json.dumps(record, indent=1, default=str) + "\n")
    return target / name


def format_outcomes(outcomes: Sequence[Outcome], tablefmt: str = "github") -> str:
    """One table per cell: each configuration's median ms per step, time x and memory x over its CE reference,
    peak memory, state; under it how it was measured and where the file is."""
    parts = []
    for o in outcomes:
        r = o.record
        title = f"training step of each configuration: {o.cell[0]} / {o.cell[1]}"
        if r.get("status") != store.MEASURED:
            parts.append(f"{title}\nnot measured: {r.get('error')}")
            continue
        ratios = store.config_ratios(r)
        rows = [(c["label"], "ref" if c["key"] == c["reference"] else "", f"{ratios[c['key']]['step_s'] * 1e3:.3f}",
                 format_ratio(ratios[c["key"]]["time_x"]), f"{ratios[c['key']]['time_x_rounds_sd']:.3f}",
                 format_ratio(ratios[c["key"]]["mem_x"]), fmt_mib(c.get("peak_bytes")), human_bytes(c["state_bytes"]),
                 f"{c['batch']}x{'x'.join(map(str, c['input_shape']))}", f"{c['parameters']:,}", str(len(c["trials"])))
                for c in r["configs"]]
        headers = ["configuration", "CE ref", "ms/step", "time x", "sd over rounds", "memory x", "peak memory",
                   "method state", "batch shape", "parameters", "trials"]
        foot = [f"controlled measurement ({store.COMMAND}): {store.how_line(r)}",
                f"took {r['seconds']:.1f} s; {'reused from ' if o.reused else 'written to '}{o.path}" if o.path else
                f"took {r['seconds']:.1f} s; not cached (no results folder of this sweep)"]
        parts.append(f"{title}\n" + tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)
                     + "\n" + "\n".join(foot))
    return "\n\n".join(parts)


def measure_folder(results_dir: str | Path, *, force: bool = False, log: Callable[[str], None] = print,
                   **kw: Any) -> list[Outcome]:
    """A results folder's cells, from its trials as they ran (each trial's config.json, else sweep.yaml's list)
    and the sweep's resources as recorded in sweep.yaml (`tfbench table --measure-costs`)."""
    from harness.folders import ResultsFolder
    from harness.results.records import load_trials

    folder = ResultsFolder(Path(results_dir))
    keys = list(load_trials(folder.path, warn=lambda s: None, write=False)["key"].astype(str))
    specs = [TrialSpec.from_dict(spec, stored=True) for spec in store.trial_specs(folder.path, keys).values()]
    if not specs:
        raise UserError(f"{results_dir}: no trial spec recorded (config.json or sweep.yaml); nothing to measure")
    resources = folder.sweep_value("resources") or {}
    return measure_sweep(specs, cpus_per_trial=float(resources.get("cpus_per_trial", 1.0)),
                         gpus_per_trial=float(resources.get("gpus_per_trial", 0.0)), results_dir=folder.path,
                         force=force, log=log, **kw)


__all__ = ["BUDGET_S", "Config", "Outcome", "build_config_case", "format_outcomes", "measure_cell", "measure_folder",
           "measure_sweep", "plan_cells", "reference_spec", "trial_device", "trial_threads"]

