"""The Ray-side entry points of a trial: `run_one` (one trial inside a Ray worker, its errors recorded in
the trial folder), the grid's trainable, and the data-parallel driver and workers (Ray Train inside the Tune
trial). Everything here runs in Ray's processes; the driver's side is harness/sweep/session.py."""
from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from harness.config.spec import TrialSpec
from harness.errors import UserError
from harness.folders import ResultsFolder, TrialFolder
from harness.progress import file_logger


def run_one(spec_dict: dict[str, Any], trial_dir: str, threads: int, report: Callable[[dict], None],
            startup: dict[str, float] | None = None, bundle: Any = None) -> None:
    """Train one trial inside a Ray worker; on failure, record the error next to the checkpoint and re-raise."""
    opened = time.time()
    import torch

    from harness.train.loop import TrialDiverged, train_trial

    torch.set_num_threads(max(1, threads))
    spec = TrialSpec.from_dict(spec_dict)
    trial = TrialFolder(trial_dir)
    tdir = trial.path
    tdir.mkdir(parents=True, exist_ok=True)
    lead = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    log = file_logger(trial / trial.LOG) if lead else (lambda line: None)  # timestamped, written through
    live, result, failed = None, None, False
    try:
        if lead:  # live curves: TensorBoard event files in the trial folder (and MLflow when asked for)
            from harness.sweep.live import LiveCurves

            live = LiveCurves.for_trial(spec, tdir, report, log)
            report = live.report
        result = train_trial(spec, tdir, report=report, log=log, startup={**(startup or {}), "opened_at": opened},
                             bundle=bundle)
    except Exception as e:  # not KeyboardInterrupt / SystemExit: a stopped trial has not failed
        failed = True
        if not lead:
            raise
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        if isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(e).lower():
            msg = f"out of memory: {msg}"
        log(traceback.format_exc())
        # a diverged loss is deterministic (same seed, same data, same steps), and so is bad input (a folder
        # holding another trial's records): another attempt would fail again, so the trial ends here as
        # failed instead of going back to Tune for a retry
        final = isinstance(e, (TrialDiverged, UserError))
        trial.write_error({"status": "failed", "error": msg, "time": time.time(), "retried": not final})
        if final:
            return
        raise
    finally:  # finished, failed or interrupted: the event files get their last epoch either way
        if live is not None:
            live.close(result, failed=failed)
    trial.clear_error()


def grid_trainable(config: dict[str, Any], specs: dict[str, dict], folder: str, threads: int) -> None:
    from ray import tune

    started = time.time()
    key = config["key"]
    run_one(specs[key], str(ResultsFolder(folder).trial(key).path), threads, report=lambda m: tune.report(m),
            startup={"launched_at": started})


def dp_driver(config: dict[str, Any], specs: dict[str, dict], folder: str, threads: int, workers: int,
              cpus: float, gpus: float) -> None:
    """Data-parallel trial: a Ray Train TorchTrainer inside the Tune trial (gloo on CPU, NCCL on GPUs)."""
    started = time.time()
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    key = config["key"]
    # the data set is built once, by a task that runs while Ray Train starts its workers (the larger part
    # of a data-parallel start-up), instead of once per worker after they have started
    data = ray.remote(num_cpus=0)(build_data).remote(specs[key])
    trainer = TorchTrainer(
        dp_worker,
        train_loop_config={"spec": specs[key], "trial_dir": str(ResultsFolder(folder).trial(key).path), "threads": threads,
                           "started": started, "data": [data]},  # in a list: Ray passes the ref, not its value
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                               resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(name=f"dp-{key}", storage_path=os.path.join(folder, ".ray", "train"),
                                       callbacks=[TuneReportCallback()],
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    trainer.fit()


def dp_worker(config: dict[str, Any]) -> None:
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
    run_one(config["spec"], config["trial_dir"], config["threads"], report=lambda m: ray.train.report(m),
            startup=startup, bundle=bundle)


def build_data(spec_dict: dict[str, Any]) -> Any:
    from harness.data import build_dataset
    from methods import load_user_module

    spec = TrialSpec.from_dict(spec_dict)
    for ref in spec.imports:  # a user's data set registers on import, like a user's method
        load_user_module(ref)
    return build_dataset(spec.dataset, dict(spec.dataset_params))
