"""Run a sweep on Ray Tune: one Tune trial per TrialSpec, resumable, fault-isolated.

Why the trial folders, not Ray's experiment state, are the source of truth: every trial checkpoints into
results/<sweep>/trials/<key>/ each epoch, and a finished trial has a result.json. A rerun of the same file
(after Ctrl-C, a kill, a reboot, or with more seeds) starts a fresh Tune experiment over the trials that
have no finished record, and each of those resumes from its own checkpoint. Nothing depends on the driver
surviving.

Over 400 lines on purpose: the Ray side of a sweep (the Tune trainables, Ray Train's data-parallel driver
and workers, Ctrl-C, the results-folder lock) shares the folder's state; the cluster checks
(sweep/cluster.py), the search (sweep/search.py) and the records (results/records.py) live beside it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import yaml

from harness.config.spec import TrialSpec
from harness.config.sweep_file import SweepSpec
from harness.errors import UserError
from harness.io import atomic_write_json, atomic_write_text
from harness.progress import Progress, file_logger
from harness.results import records
from harness.sweep import cluster

# The trials.csv columns and the reading of trial records live with the readers (harness/results/records.py),
# so that the readers never import the runner; these names stay importable from here.
RESULT_COLUMNS = records.RESULT_COLUMNS
read_record = records.read_record
trial_status = records.trial_status
_error_of = records.error_of


# --- the results folder --------------------------------------------------------------------------

class ResultsLock:
    """One sweep per results folder at a time: a second `tfbench run` gets a clear message, not a mix-up."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> ResultsLock:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise UserError(f"{self.path} is a directory, not tfbench's lock file; if no tfbench run is using "
                            f"{self.path.parent}, remove it (rmdir {self.path}) and rerun") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UserError(f"{self.path.parent}: another tfbench run (pid {holder}) is using this results folder; "
                            f"wait for it to finish, or give this sweep another name") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def write_probe(folder: Path) -> None:
    """Fail before any training if results cannot be written (read-only folder, full disk)."""
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:  # a full disk fails in write or fsync: leave nothing behind either way
            probe.unlink(missing_ok=True)
    except OSError as e:
        raise UserError(f"cannot write results to {folder}: {e.strerror or e}; free space or choose another "
                        f"folder with --results") from None


def write_trials_csv(folder: Path, trials: list[TrialSpec], *, stale: Collection[str] = ()) -> Path:
    """One flat row per trial of the sweep, in the sweep's order: the source of every table.
    `stale`: keys of finished trials whose stored spec no longer matches the sweep (issue 12)."""
    return records.write_trials_csv(folder, [(t.key(), t.to_dict()) for t in trials], stale=stale)


def write_sweep_record(folder: Path, sweep: SweepSpec, sets: list[str]) -> None:
    record = {"source": str(sweep.source), "sets": list(sets), "file": sweep.raw,
              "trials": [{"key": t.key(), "spec": t.to_dict()} for t in sweep.trials]}
    atomic_write_text(folder / "sweep.yaml", yaml.safe_dump(record, sort_keys=False))


# --- the Ray side --------------------------------------------------------------------------------

def _trial_logger(path: Path) -> Callable[[str], None]:
    return file_logger(path)  # every train.log line timestamped, written through at once


def _run_one(spec_dict: dict[str, Any], trial_dir: str, threads: int, report: Callable[[dict], None],
             startup: dict[str, float] | None = None, bundle: Any = None) -> None:
    """Train one trial inside a Ray worker; on failure, record the error next to the checkpoint and re-raise."""
    import torch

    from harness.train.loop import TrialDiverged, train_trial

    torch.set_num_threads(max(1, threads))
    spec = TrialSpec.from_dict(spec_dict)
    tdir = Path(trial_dir)
    tdir.mkdir(parents=True, exist_ok=True)
    lead = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    log = _trial_logger(tdir / "train.log") if lead else (lambda line: None)
    live, result, failed = None, None, False
    try:
        if lead:  # live curves: TensorBoard event files in the trial folder (and MLflow when asked for)
            from harness.sweep.live import LiveCurves

            live = LiveCurves.for_trial(spec, tdir, report, log)
            report = live.report
        result = train_trial(spec, tdir, report=report, log=log, startup=startup, bundle=bundle)
    except Exception as e:  # not KeyboardInterrupt / SystemExit: a stopped trial has not failed
        failed = True
        if not lead:
            raise
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        if isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(e).lower():
            msg = f"out of memory: {msg}"
        log(traceback.format_exc())
        # a diverged loss is deterministic (same seed, same data, same steps): another attempt would only
        # diverge again, so the trial ends here as failed instead of going back to Tune for a retry
        final = isinstance(e, TrialDiverged)
        atomic_write_json(tdir / "error.json", {"status": "failed", "error": msg, "time": time.time(),
                                                "retried": not final})
        if final:
            return
        raise
    finally:  # finished, failed or interrupted: the event files get their last epoch either way
        if live is not None:
            live.close(result, failed=failed)
    (tdir / "error.json").unlink(missing_ok=True)


def _tune_trainable(config: dict[str, Any], specs: dict[str, dict], folder: str, threads: int) -> None:
    from ray import tune

    started = time.time()
    key = config["key"]
    _run_one(specs[key], os.path.join(folder, "trials", key), threads, report=lambda m: tune.report(m),
             startup={"launched_at": started})


def _dp_driver(config: dict[str, Any], specs: dict[str, dict], folder: str, threads: int, workers: int,
               cpus: float, gpus: float) -> None:
    """Data-parallel trial: a Ray Train TorchTrainer inside the Tune trial (gloo on CPU, NCCL on GPUs)."""
    started = time.time()
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    key = config["key"]
    # the data set is built once, by a task that runs while Ray Train starts its workers (the larger part
    # of a data-parallel start-up), instead of once per worker after they have started
    data = ray.remote(num_cpus=0)(_build_data).remote(specs[key])
    trainer = TorchTrainer(
        _dp_worker,
        train_loop_config={"spec": specs[key], "trial_dir": os.path.join(folder, "trials", key), "threads": threads,
                           "started": started, "data": [data]},  # in a list: Ray passes the ref, not its value
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                               resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(name=f"dp-{key}", storage_path=os.path.join(folder, ".ray", "train"),
                                       callbacks=[TuneReportCallback()],
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    trainer.fit()


def _dp_worker(config: dict[str, Any]) -> None:
    entered = time.time()
    import ray.train

    import harness.train.loop  # noqa: F401  (here only to time the worker's imports)

    imported = time.time()
    try:
        bundle = ray.get(config["data"][0])
    except Exception:  # noqa: BLE001  the worker builds it again and records the error as its own (error.json)
        bundle = None
    # where a data-parallel start-up goes (result.json): Ray Train's workers, their imports, the wait for
    # the data set the driver's task builds meanwhile
    startup = {"launched_at": config["started"], "workers_s": entered - config["started"],
               "imports_s": imported - entered, "data_wait_s": time.time() - imported}
    # every worker reports (Ray Train's report is collective); train_trial writes files on rank 0 only
    _run_one(config["spec"], config["trial_dir"], config["threads"], report=lambda m: ray.train.report(m),
             startup=startup, bundle=bundle)


def _build_data(spec_dict: dict[str, Any]) -> Any:
    from harness.data import build_dataset
    from methods import load_user_module

    spec = TrialSpec.from_dict(spec_dict)
    for ref in spec.imports:  # a user's data set registers on import, like a user's method
        load_user_module(ref)
    return build_dataset(spec.dataset, dict(spec.dataset_params))


def _make_callback(progress: Progress, folder: Path):
    from ray import tune

    class _Cb(tune.Callback):
        def on_step_end(self, iteration, trials, **info):
            progress.tick()  # Tune's loop turns several times a second: the heartbeat in a log

        def on_trial_start(self, iteration, trials, trial, **info):
            progress.start(trial.config["key"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            key = trial.config["key"]
            # a diverged trial returns normally (no retry) with its error recorded: it failed
            if trial_status(Path(folder) / "trials" / key) == "failed":
                progress.fail(key)
            else:
                progress.finish(key)

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.fail(trial.config["key"])

    return _Cb()


def init_ray(address: str | None, cpus: float, gpus_needed: float) -> None:
    """Attach (run_sweep's preflight already did, after its checks) or start a loopback-only local Ray.
    Whether a trial fits was checked before anything was written (cluster.preflight)."""
    import ray

    address = cluster.resolve_address(address)
    if address:
        if not ray.is_initialized():
            cluster.connect(address)
    else:
        cluster.start_local(gpus_needed > 0)


def run_sweep(sweep: SweepSpec, results_root: Path, *, sets: list[str] = (), address: str | None = None,
              progress: bool = True, rerun_stale: bool = False) -> int:
    """Run what is missing of `sweep`, then write trials.csv, the summary tables and the plots.

    Returns 0 when every trial finished, 1 when some failed. Before anything is written or Ray starts:
    resources against this machine (without a cluster), data roots, and stale trials (finished under
    settings the sweep no longer means: refused unless `rerun_stale`, which moves them to stale/).
    """
    from harness.config.stale import describe_stale, find_stale, move_aside

    folder = (results_root / sweep.name).resolve()
    on_cluster = address or os.environ.get("RAY_ADDRESS")
    address = cluster.preflight(sweep.resources, address, sweep)  # reachable, and a trial fits: before any write
    if not on_cluster:  # on a cluster the data lives on the workers
        check_data_roots([t for t in sweep.trials if trial_status(folder / "trials" / t.key()) != "finished"])
    stale = find_stale(folder, {t.key(): t.to_dict() for t in sweep.trials})
    if stale and not rerun_stale:
        raise UserError("\n".join([f"{folder}: " + line for line in describe_stale(stale)] + [
            f"{folder}: {len(stale)} stale trial(s) in all; rerun with --rerun-stale to train the current settings "
            f"(the old folders move to {folder / 'stale'}/, nothing is deleted)"]))
    write_probe(folder)
    with ResultsLock(folder):
        if stale:
            moved = move_aside(folder, set(stale))
            print(f"sweep {sweep.name}: moved {len(moved)} stale trial folder(s) to {folder / 'stale'}/", flush=True)
        _remove_stale_temporaries(folder)
        write_sweep_record(folder, sweep, list(sets))
        if sweep.search is not None:  # tune, then confirm (harness/sweep/search.py)
            from harness.sweep.search import run_search

            return run_search(sweep, folder, sets=list(sets), address=address, show=progress)
        pending = [t for t in sweep.trials if trial_status(folder / "trials" / t.key()) != "finished"]
        done_before = len(sweep.trials) - len(pending)
        print(f"sweep {sweep.name}: {len(sweep.trials)} trials, {done_before} already finished, "
              f"{len(pending)} to run -> {folder}", flush=True)
        interrupted = False
        if pending:
            try:
                interrupted = _tune(sweep, folder, pending, done_before, address, progress)
            except KeyboardInterrupt:  # Ctrl-C outside Tune's loop (starting Ray), or a second Ctrl-C
                interrupted = True
        write_trials_csv(folder, sweep.trials)
        statuses = {t.key(): trial_status(folder / "trials" / t.key()) for t in sweep.trials}
        n_done = sum(s == "finished" for s in statuses.values())
        if interrupted:
            # the summary waits for the rerun; trials.csv already says what finished
            print(f"tfbench: sweep {sweep.name} interrupted: {n_done} of {len(sweep.trials)} trials finished and "
                  f"kept; rerun the same command to continue (stopped trials resume from their last "
                  f"checkpoint); {folder / 'trials.csv'}", file=sys.stderr, flush=True)
            return 130
        _test_pause("TFBENCH_TEST_PAUSE_BEFORE_SUMMARY")
        _summarise(folder)
    failed = [t for t in sweep.trials if statuses[t.key()] != "finished"]
    print(f"sweep {sweep.name}: {n_done} finished, {len(failed)} failed; {folder / 'trials.csv'}", flush=True)
    for t in failed:
        tdir = folder / "trials" / t.key()
        why = _error_of(tdir) if statuses[t.key()] == "failed" else "did not finish"
        print(f"  failed: {t.key()}: {why} (full log: {tdir / 'train.log'})", flush=True)
    return 1 if failed else 0


def check_data_roots(trials: list[TrialSpec]) -> None:
    """Refuse a sweep whose data is missing or laid out wrongly, before anything is written or Ray starts:
    the cheap checks only (the root exists, its top-level layout); a trial still reports deeper problems."""
    from harness.data import check_dataset

    seen: set[tuple[str, str]] = set()
    for t in trials:
        ident = (t.dataset, json.dumps(t.dataset_params, sort_keys=True, default=str))
        if ident not in seen:
            seen.add(ident)
            check_dataset(t.dataset, dict(t.dataset_params))


def _remove_stale_temporaries(folder: Path) -> None:
    """Half-written files of a killed run (atomic writes' .<name>.*.tmp, a probe) never become results;
    remove them at every level. Called with the lock held, so no live writer owns them."""
    records.remove_stale_temporaries(folder, lock_held=True)


def _test_pause(var: str) -> None:
    """Test-only hook (tests/test_reliability.py): with $VAR set to a path, create that file and wait while
    it exists, so a test can kill the driver at a known point. Unset (always, outside tests): no effect."""
    marker = os.environ.get(var)
    if not marker:
        return
    Path(marker).touch()
    deadline = time.time() + 600
    while Path(marker).exists() and time.time() < deadline:
        time.sleep(0.05)


def _tune(sweep: SweepSpec, folder: Path, pending: list[TrialSpec], done_before: int, address: str | None,
          show: bool) -> bool:
    """Run the pending trials; returns True when Ctrl-C stopped the sweep."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ray reports usage statistics to its servers by default; tfbench makes no network access unless asked
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import tune

    r = sweep.resources
    workers = r.workers_per_trial
    placement = cluster.placement_of(r)
    init_ray(address, r.cpus_per_trial * (workers if workers > 1 else 1), r.gpus_per_trial)
    actors_before = cluster.leftover_candidates()
    specs = {t.key(): t.to_dict() for t in pending}
    threads = max(1, int(r.cpus_per_trial))
    if workers > 1:
        trainable = tune.with_parameters(_dp_driver, specs=specs, folder=str(folder), threads=threads,
                                         workers=workers, cpus=r.cpus_per_trial, gpus=r.gpus_per_trial)
    else:
        trainable = tune.with_parameters(_tune_trainable, specs=specs, folder=str(folder), threads=threads)
    trainable = tune.with_resources(trainable, cluster.tune_resources(placement))
    progress = Progress(sweep.name, len(sweep.trials), done_before=done_before)
    callbacks = [_make_callback(progress, folder)] if show else []
    callbacks.append(cluster.tune_watchdog_callback(cluster.PendingWatchdog(placement)))
    tuner = tune.Tuner(
        trainable,
        param_space={"key": tune.grid_search(list(specs))},
        tune_config=tune.TuneConfig(max_concurrent_trials=cluster.max_concurrent(placement, r.max_concurrent),
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"run-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(folder / ".ray"), verbose=0, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=sweep.retries),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    # a failing trial's traceback goes to its own train.log; the driver shows one line per failure
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        if show:
            progress.show(force=True)
        with _CtrlC() as ctrl_c:
            cluster.fit(tuner)
    finally:
        progress.close()
        if not address and not os.environ.get("RAY_ADDRESS"):
            ray.shutdown()
        else:  # someone else's cluster: keep it running, take back what this sweep left on it
            cluster.remove_leftover_actors(actors_before)
    return ctrl_c.pressed


class _CtrlC:
    """Ctrl-C during Tune's loop. Why our own handler: Tune's stops the run gracefully but leaves no trace
    of it (fit() returns as if the sweep had ended). Ours records the interruption, then asks Tune for the
    same graceful stop through SIGUSR1, which Tune always handles that way; a second Ctrl-C stops at once."""

    def __init__(self):
        self.pressed = False
        self.active = threading.current_thread() is threading.main_thread()  # signals: main thread only
        self.old: dict[int, Any] = {}
        self.env: str | None = None

    def __enter__(self) -> _CtrlC:
        if self.active:
            self.env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            self.old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1)}
            signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.pressed or not callable(signal.getsignal(signal.SIGUSR1)):  # Tune is not listening yet
            raise KeyboardInterrupt
        self.pressed = True
        print("\ntfbench: Ctrl-C: stopping the sweep (running trials keep their last epoch's checkpoint); "
              "press Ctrl-C again to stop at once", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)

    def __exit__(self, *exc: Any) -> None:
        if not self.active:
            return
        for s, handler in self.old.items():
            signal.signal(s, handler)
        if self.env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self.env


def _summarise(folder: Path) -> None:
    """Tables and plots, when the results code is installed; a failure here never loses trial records."""
    try:
        from harness.results.tables import write_summary
    except ImportError:
        return
    try:
        write_summary(folder)
        from harness.results.plots import write_plots

        write_plots(folder)
    except Exception as e:  # e.g. a damaged metrics file: trials.csv is already complete
        log = folder / "summary-error.log"
        atomic_write_text(log, traceback.format_exc())
        print(f"tfbench: warning: could not write the summary or plots ({type(e).__name__}: {e}); trials.csv is "
              f"complete; details in {log}; `tfbench table {folder}` retries", file=sys.stderr, flush=True)

