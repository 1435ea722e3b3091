"""The one Tune session of a sweep: Ray started (or attached) once, Tune's output quieted, Ctrl-C recorded,
every experiment's trials placed, watched and counted by one progress line, and at the end Ray shut down
(or, on someone else's cluster, what this sweep left there removed).

The grid (`run_trials`) and the search's experiments (harness/sweep/search.py) all go through
`TuneSession.fit`, so resources, the pending-trial watchdog, retries, logging and cleanup are one code path.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.config.spec import TrialSpec
from harness.config.sweep_file import SweepSpec
from harness.folders import ResultsFolder
from harness.progress import Progress
from harness.sweep import cluster, trainables


class TuneSession:
    """`with TuneSession(sweep, folder, address=..., show=...) as session: session.run_trials(...)`."""

    def __init__(self, sweep: SweepSpec, folder: ResultsFolder, *, address: str | None, show: bool):
        self.sweep, self.folder, self.address, self.show = sweep, folder, address, show
        self.placement = cluster.placement_of(sweep.resources)
        self.ctrl_c = CtrlC()
        self.actors_before: set[tuple[str, str]] = set()
        self.started = False

    def __enter__(self) -> TuneSession:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        # Ray reports usage statistics to its servers by default; tfbench makes no network access unless asked
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.ctrl_c.__enter__()  # before Ray starts: a Ctrl-C while it starts is an interruption too
        started = time.time()
        print(f"sweep {self.sweep.name}: starting Ray ({'attaching to ' + self.address if self.address else 'local'})"
              f"...", flush=True)
        try:
            import ray

            address = cluster.resolve_address(self.address)
            if address:  # run_sweep's preflight attached already, after its checks
                if not ray.is_initialized():
                    cluster.connect(address)
            else:
                cluster.start_local(self.sweep.resources.gpus_per_trial > 0)
            self.started = True
            self.actors_before = cluster.leftover_candidates()
            print(f"sweep {self.sweep.name}: Ray ready in {time.time() - started:.1f} s; placing trials", flush=True)
        except BaseException:  # e.g. Ctrl-C while Ray starts: leave the signal handlers as they were
            self.__exit__()
            raise
        # a failing trial's traceback goes to its own train.log; the driver shows one line per failure
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ctrl_c.__exit__()
        if "ray" not in sys.modules:  # interrupted before Ray was imported
            return
        import ray

        if not self.address and not os.environ.get("RAY_ADDRESS"):
            ray.shutdown()  # also a local Ray interrupted while it started
        elif self.started:  # someone else's cluster: keep it running, take back what this sweep left on it
            cluster.remove_leftover_actors(self.actors_before)

    @property
    def interrupted(self) -> bool:
        return self.ctrl_c.pressed

    def fit(self, trainable: Callable, *, name: str, param_space: dict[str, Any], progress: Progress,
            key_of: Callable[[Any], str], epochs_of: Callable[[str], int] | None = None, scheduler: Any = None,
            search_alg: Any = None, num_samples: int = 1) -> Any:
        """One Tune experiment under this session's placement, watchdog, retries and progress line."""
        from ray import tune

        r = self.sweep.resources
        trainable = tune.with_resources(trainable, cluster.tune_resources(self.placement))
        callbacks = [progress_callback(progress, self.folder, key_of, epochs_of)] if self.show else []
        callbacks.append(cluster.tune_watchdog_callback(cluster.PendingWatchdog(self.placement)))
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=search_alg, num_samples=num_samples,
                                        max_concurrent_trials=cluster.max_concurrent(self.placement, r.max_concurrent),
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(self.folder / ".ray"), verbose=0, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=self.sweep.retries),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
        if self.show:
            progress.show(force=True)
        return cluster.fit(tuner)

    def run_trials(self, trials: list[TrialSpec], progress: Progress) -> None:
        """The grid: one Tune trial per TrialSpec (a Ray Train job inside it when data-parallel)."""
        from ray import tune

        r = self.sweep.resources
        specs = {t.key(): t.to_dict() for t in trials}
        threads = max(1, int(r.cpus_per_trial))
        if r.workers_per_trial > 1:
            trainable = tune.with_parameters(trainables.dp_driver, specs=specs, folder=str(self.folder.path),
                                             threads=threads, workers=r.workers_per_trial, cpus=r.cpus_per_trial,
                                             gpus=r.gpus_per_trial)
        else:
            trainable = tune.with_parameters(trainables.grid_trainable, specs=specs, folder=str(self.folder.path),
                                             threads=threads)
        epochs = {t.key(): t.train.epochs for t in trials}
        self.fit(trainable, name="run", param_space={"key": tune.grid_search(list(specs))}, progress=progress,
                 key_of=lambda trial: trial.config["key"], epochs_of=epochs.get)


def progress_callback(progress: Progress, folder: ResultsFolder, key_of: Callable[[Any], str],
                      epochs_of: Callable[[str], int] | None = None) -> Any:
    """Tune's trial events on the one status line, each trial named by its key (`key_of(trial)`): starts,
    each reported epoch (`epochs_of(key)`: the trial's epochs), the best validation top-1 so far, ends."""
    from ray import tune

    class _Progress(tune.Callback):
        def on_step_end(self, iteration, trials, **info):
            progress.tick()  # Tune's loop turns several times a second: the heartbeat in a log

        def on_trial_start(self, iteration, trials, trial, **info):
            progress.start(key_of(trial))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            key = key_of(trial)
            if isinstance(result.get("val_top1"), (int, float)):
                progress.best(float(result["val_top1"]), key)
            if epochs_of is not None and isinstance(result.get("epoch"), int):
                progress.epoch(key, result["epoch"], epochs_of(key))

        def on_trial_complete(self, iteration, trials, trial, **info):
            key = key_of(trial)
            t = folder.trial(key)
            # a diverged trial returns normally (no retry) with its error recorded: it failed; a trial ASHA
            # stopped early is done, not finished
            if t.status() == "failed":
                progress.fail(key)
            elif t.status() != "finished" and (t / t.STOPPED).exists():
                progress.stop(key)
            else:
                progress.finish(key)

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.fail(key_of(trial))

    return _Progress()


class CtrlC:
    """Ctrl-C during a sweep. Why our own handler: Tune's stops the run gracefully but leaves no trace
    of it (fit() returns as if the sweep had ended). Ours records the interruption, then asks Tune for the
    same graceful stop through SIGUSR1, which Tune always handles that way; a second Ctrl-C stops at once."""

    def __init__(self):
        self.pressed = False
        self.active = threading.current_thread() is threading.main_thread()  # signals: main thread only
        self.old: dict[int, Any] = {}
        self.env: str | None = None

    def __enter__(self) -> CtrlC:
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


def pause_for_tests(var: str) -> None:
    """Test-only hook (tests/sweep/test_reliability.py): with $VAR set to a path, create that file and wait
    while it exists, so a test can kill the driver at a known point. Unset (always, outside tests): no effect."""
    marker = os.environ.get(var)
    if not marker:
        return
    Path(marker).touch()
    deadline = time.time() + 600
    while Path(marker).exists() and time.time() < deadline:
        time.sleep(0.05)
