"""Live curves: every trial's per-epoch metrics as TensorBoard event files under trials/<key>/tb/, with its
hyper-parameters and final test numbers once it finishes, and, when asked for, an MLflow run per trial in
an SQLite store.

Why beside the Ray report and not a Ray Tune logger callback: a trial folder is tfbench's record and Ray's
experiment folders are not kept (every rerun starts a fresh experiment), so the curves live with the trial
(a resumed trial appends a new event file to the same folder). The writer is torch's
(`torch.utils.tensorboard`, on the `tensorboard` package); MLflow is the optional extra `mlflow`.

Tags (the same names in TensorBoard and MLflow; the step is the epoch):
  train_loss -> train/loss, train_top1 -> train/top1, train_<part> -> train/<part> (the method's loss parts),
  val_<m> -> val/<m>, lr -> lr, epoch_time_s -> time/epoch_s, step_time_s -> time/step_ms (milliseconds);
  another numeric key: <split>_<m> -> <split>/<m> for the splits train, val and test, <name>_time_s ->
  time/<name>_s, any other as it is. At the end, at the last epoch's step: the result's selected_<m> and
  last_<m> as test/selected_<m> and test/last_<m>, val_selected_top1 as val/selected_top1.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.folders import TrialFolder

TB_DIR = "tb"
EXPERIMENT = "tfbench"
MLFLOW_ENV = "TFBENCH_MLFLOW_URI"  # set by `tfbench run --mlflow DIR`; read in the trial's process
INSTALL_MLFLOW = "pip install -e '.[mlflow]' in the tfbench checkout (.venv/bin/pip with make's .venv)"

FIXED_TAGS = {"train_loss": "train/loss", "train_top1": "train/top1", "lr": "lr",
              "epoch_time_s": "time/epoch_s", "step_time_s": "time/step_ms"}
SCALE = {"step_time_s": 1000.0}  # a step takes milliseconds: seconds would read 0.00x on the axis
SPLITS = ("train", "val", "test")
FINAL_TAGS = {**{f"{which}_{m}": f"test/{which}_{m}" for which in ("selected", "last")
                 for m in ("top1", "top5", "nll", "ece")},
              "val_selected_top1": "val/selected_top1"}
MLFLOW_MARK = "val/top1"  # an epoch is in an MLflow run once this metric is: every epoch reports it

Status = str  # FINISHED | FAILED | KILLED (MLflow's names for a run's end)


def tensorboard_command(results_folder: Path) -> str:
    return f"tensorboard --logdir {results_folder / 'trials'}"


def check_mlflow(folder: Path) -> str:
    """The tracking URI of an SQLite store in `folder`, created with its experiment here, once, before any
    trial writes to it. Why SQLite: MLflow 3 refuses new file stores, and the trials of a sweep write
    concurrently, which a database serialises."""
    try:
        import mlflow
    except ImportError:
        raise UserError(f"--mlflow needs the mlflow package: {INSTALL_MLFLOW}") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--mlflow {folder}: cannot create it: {e.strerror}") from None
    uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT)
    return uri


def mlflow_uri_from_env() -> str | None:
    return os.environ.get(MLFLOW_ENV) or None


# --- names and values ----------------------------------------------------------------------------

def tag_of(key: str) -> str:
    """The tag of a metrics.jsonl key (module docstring)."""
    if key in FIXED_TAGS:
        return FIXED_TAGS[key]
    split, _, rest = key.partition("_")
    if split in SPLITS and rest:
        return f"{split}/{rest}"
    if key.endswith("_time_s"):
        return f"time/{key.removesuffix('_time_s')}_s"
    return key


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """One epoch's numeric metrics by tag (the epoch itself is the step, not a curve)."""
    return {tag_of(k): float(v) * SCALE.get(k, 1.0) for k, v in metrics.items() if k != "epoch" and _number(v)}


def final_scalars(result: dict[str, Any]) -> dict[str, float]:
    """The test numbers of train_trial's result by tag; those it does not have (None) are left out."""
    return {tag: float(result[k]) for k, tag in FINAL_TAGS.items() if _number(result.get(k))}


def hparams_of(spec: Any) -> dict[str, int | float | str]:
    """A TrialSpec's hyper-parameters, named as `--set` names them (method.<param>, train.<field>)."""
    hp: dict[str, Any] = {"method": spec.method, "dataset": spec.dataset, "model": spec.model, "seed": spec.seed}
    hp.update({f"method.{k}": _hparam_value(v) for k, v in sorted(spec.method_params.items())})
    t = spec.train
    hp.update({"train.epochs": t.epochs, "train.lr": t.lr, "train.batch_size": t.batch_size,
               "train.protocol": t.protocol})
    return hp


def _hparam_value(value: Any) -> int | float | str:
    """TensorBoard takes numbers and strings: anything else (None, a list) as its JSON, and a boolean as
    True or False (torch's writer would record it as the number 1.0 or 0.0)."""
    if isinstance(value, bool):
        return str(value)
    return value if isinstance(value, (int, float, str)) else json.dumps(value, default=str)


# --- the object the runner holds -----------------------------------------------------------------

class LiveCurves:
    """A trial's live curves: `report(metrics)` writes an epoch, then passes it on; `close(result)` writes
    the final numbers and the hyper-parameters, and ends the writers.

    An epoch already in a sink (a restart from scratch after a lost checkpoint, or from the checkpoint
    before the last logged epoch) is not logged again; an epoch of metrics.jsonl missing from a sink (a
    kill between the checkpoint and the report, or --mlflow added on a rerun) is logged from the file."""

    def __init__(self, trial_dir: Path, key: str, hparams: dict[str, Any], report: Callable[[dict], None],
                 mlflow_uri: str | None = None, log: Callable[[str], None] = print):
        self.trial_dir, self.hparams, self._report, self.log = trial_dir, hparams, report, log
        self.sinks: list[Any] = [_TensorBoard(trial_dir / TB_DIR)]
        try:
            if mlflow_uri:
                self.sinks.append(_MLflow(mlflow_uri, key, hparams))
        except BaseException:
            self.sinks[0].finish(0, {}, hparams, "KILLED")  # nobody else will close the event file
            raise
        self.last_epoch = 0
        self.caught_up = False

    @classmethod
    def for_trial(cls, spec: Any, trial_dir: Path, report: Callable[[dict], None],
                  log: Callable[[str], None]) -> LiveCurves:
        return cls(trial_dir, spec.key(), hparams_of(spec), report, mlflow_uri_from_env(), log)

    def report(self, metrics: dict[str, Any]) -> None:
        step = int(metrics.get("epoch", 0))
        if not self.caught_up:  # metrics.jsonl agrees with the checkpoint from the first report on
            self._catch_up(before=step)
        self._write(step, epoch_scalars(metrics))
        self._report(metrics)  # after the write: a stop raised in Ray's report must not lose the epoch

    def close(self, result: dict[str, Any] | None = None, *, failed: bool = False) -> None:
        """End the trial's curves: `result` when it finished, `failed` when it raised, neither when it was
        interrupted. Never raises: the curves are a view of the trial's record, which is written already."""
        status: Status = "FINISHED" if result is not None else "FAILED" if failed else "KILLED"
        final = final_scalars(result) if result is not None else {}
        if result is not None:
            self._quietly("could not log the last epochs", lambda: self._catch_up(before=None))
        step = self.last_epoch or int((result or {}).get("epochs") or 0)
        for sink in self.sinks:
            self._quietly(f"{type(sink).__name__.strip('_')}: could not close",
                          lambda sink=sink: sink.finish(step, final, self.hparams, status))

    def _quietly(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as e:  # noqa: BLE001  one line in train.log; the trial's outcome stands
            self.log(f"warning: live curves: {what}: {type(e).__name__}: {e}")

    def _write(self, step: int, values: dict[str, float]) -> None:
        self.last_epoch = max(self.last_epoch, step)
        for sink in self.sinks:
            if step not in sink.logged:
                sink.epoch(step, values)
                sink.logged.add(step)

    def _catch_up(self, before: int | None) -> None:
        """Log the epochs of metrics.jsonl before `before` (all when None) that a sink lacks."""
        from harness.train.checkpoint import read_metrics

        self.caught_up = True
        for row in read_metrics(self.trial_dir / TrialFolder.METRICS, lambda line: None):
            if before is None or row["epoch"] < before:
                self._write(int(row["epoch"]), epoch_scalars(row))


# --- the sinks -----------------------------------------------------------------------------------

class _TensorBoard:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.logged = logged_epochs(folder)  # before this writer adds its own event file
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=5)

    def epoch(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a running TensorBoard shows the epoch at once

    def finish(self, step: int, final: dict[str, float], hparams: dict[str, Any], status: Status) -> None:
        try:
            if status == "FINISHED":
                for tag, value in final.items():
                    self.writer.add_scalar(tag, value, step)
                self._hparams(step, hparams, final)
        finally:
            self.writer.close()

    def _hparams(self, step: int, hparams: dict[str, Any], final: dict[str, float]) -> None:
        """The session start and end of the HPARAMS plugin, in this trial's own folder. Why not
        SummaryWriter.add_hparams: it writes into a new subfolder and adds an experiment summary, and
        TensorBoard takes the columns of the first experiment summary it finds, so the parameters of
        other methods would have no column; without one it collects the columns from every trial's
        session (and its metrics from the trials' scalars). Written only for a finished trial: the
        first session end TensorBoard reads is the one it keeps, and a resumed trial ends again."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        _, start, end = hparams_summaries(hparams, final)
        self.writer.file_writer.add_summary(start, step)
        self.writer.file_writer.add_summary(end, step)
        self.writer.flush()


def logged_epochs(folder: Path) -> set[int]:
    """The epochs already in a trial's event files: the steps of any per-epoch scalar. A record cut short
    by a kill ends that file's reading (TensorBoard's reader stops there)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    final = set(FINAL_TAGS.values())
    steps: set[int] = set()
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if any(v.tag not in final and not v.tag.startswith("_hparams_/") for v in event.summary.value):
                steps.add(int(event.step))
    return steps


class _MLflow:
    """One MLflow run per trial key, reused on resume (set RUNNING again until it ends)."""

    def __init__(self, uri: str, key: str, hparams: dict[str, Any]):
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri=uri)
        self.run_id = _mlflow_run(self.client, key, hparams)
        self.logged = {int(m.step) for m in self.client.get_metric_history(self.run_id, MLFLOW_MARK)}

    def epoch(self, step: int, values: dict[str, float]) -> None:
        self._metrics(step, values)

    def finish(self, step: int, final: dict[str, float], hparams: dict[str, Any], status: Status) -> None:
        if final:
            self._metrics(step, final)
        self.client.set_terminated(self.run_id, status=status)

    def _metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(tag, value, now, step) for tag, value in values.items()])


def _mlflow_run(client: Any, key: str, hparams: dict[str, Any]) -> str:
    """The run id of trial `key`: found by its tag, or created with the trial's hyper-parameters as params."""
    from mlflow.entities import Param

    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    found = client.search_runs([exp_id], filter_string=f"tags.key = '{key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(exp_id, run_name=key, tags={"key": key})
    client.log_batch(run.info.run_id, params=[Param(name, str(value)) for name, value in hparams.items()])
    return run.info.run_id
