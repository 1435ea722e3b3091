"""Live curves: every trial's per-epoch metrics as TensorBoard event files under trials/<key>/tb/, and,
when asked for, an MLflow run per trial in a local file store.

Why beside the Ray report and not a Ray Tune logger callback: a trial folder is tfbench's record and Ray's
experiment folders are not kept (every rerun starts a fresh experiment), so the curves live with the trial
(resumed trials append a new event file to the same folder). tensorboardX comes with ray[tune]; MLflow is
the optional extra `mlflow`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UserError

TB_DIR = "tb"
EXPERIMENT = "tfbench"
MLFLOW_ENV = "TFBENCH_MLFLOW_URI"  # set by `tfbench run --mlflow DIR`; read in the trial's process


def tensorboard_command(results_folder: Path) -> str:
    return f"tensorboard --logdir {results_folder / 'trials'}"


def check_mlflow(folder: Path) -> str:
    """The tracking URI of an SQLite store in `folder`, created with its experiment here, once, before any
    trial writes to it. Why SQLite: MLflow 3 refuses new file stores, and the trials of a sweep write
    concurrently, which a database serialises."""
    try:
        import mlflow
    except ImportError:
        raise UserError("--mlflow needs the mlflow package: pip install 'tfbench[mlflow]'") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--mlflow {folder}: cannot create it: {e.strerror}") from None
    uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT)
    return uri


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of one epoch (the epoch itself is the step, not a curve)."""
    return {k: float(v) for k, v in metrics.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def live_report(report: Callable[[dict], None], trial_dir: Path, key: str, params: dict[str, Any],
                mlflow_uri: str | None = None) -> Callable[[dict], None]:
    """`report` that first writes the epoch's scalars to TensorBoard (and MLflow), flushed each epoch so a
    running TensorBoard shows it at once."""
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir=str(trial_dir / TB_DIR), flush_secs=5)
    run = _mlflow_run(mlflow_uri, key, params) if mlflow_uri else None

    def wrapped(metrics: dict[str, Any]) -> None:
        step = int(metrics.get("epoch", 0))
        values = scalars(metrics)
        for name, value in values.items():
            writer.add_scalar(name, value, step)
        writer.flush()
        if run is not None:
            client, run_id = run
            for name, value in values.items():
                client.log_metric(run_id, name, value, step=step)
        report(metrics)

    return wrapped


def _mlflow_run(uri: str, key: str, params: dict[str, Any]) -> tuple[Any, str]:
    """One MLflow run per trial key (reused on resume): its params are the trial's method parameters."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    found = client.search_runs([exp_id], filter_string=f"tags.key = '{key}'", max_results=1)
    if found:
        return client, found[0].info.run_id
    run = client.create_run(exp_id, run_name=key, tags={"key": key})
    for name, value in params.items():
        client.log_param(run.info.run_id, name, value)
    return client, run.info.run_id


def mlflow_uri_from_env() -> str | None:
    return os.environ.get(MLFLOW_ENV) or None
