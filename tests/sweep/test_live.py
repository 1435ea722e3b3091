"""Live curves: a real short trial through the Ray side's run_one, its event files read back with
TensorBoard's own reader and compared with what the trial recorded (metrics.jsonl, result.json,
config.json); a killed and resumed trial; MLflow where it is installed."""
from __future__ import annotations

import json

import pytest
from helpers import event_scalars, read_metrics

from harness.config.resolve import resolve_trial
from harness.sweep.live import check_mlflow, tag_of
from harness.sweep.trainables import run_one

EPOCHS = 3
# the tag and the factor of each fixed metrics.jsonl key, written out here, not taken from live.py;
# the method's loss parts (train_<part>) are train/<part>
TAGS = {"train_loss": ("train/loss", 1.0), "train_top1": ("train/top1", 1.0), "val_top1": ("val/top1", 1.0),
        "val_top5": ("val/top5", 1.0), "val_nll": ("val/nll", 1.0), "val_ece": ("val/ece", 1.0),
        "lr": ("lr", 1.0), "epoch_time_s": ("time/epoch_s", 1.0), "step_time_s": ("time/step_ms", 1000.0),
        # where the epoch's wall time went (docs/results.md): <name>_time_s -> time/<name>_s
        **{f"{name}_time_s": (f"time/{name}_s", 1.0) for name in ("steps", "eval", "checkpoint", "checkpoint_write",
                                                                 "other")}}
FINAL = {**{f"{w}_{m}": f"test/{w}_{m}" for w in ("selected", "last") for m in ("top1", "top5", "nll", "ece")},
         "val_selected_top1": "val/selected_top1"}


def spec(method: str = "zipf"):
    # zipf: a method with loss parts of its own (train_ce, train_zipf, train_aux_ce)
    return resolve_trial(method=method, dataset="digits", model="tiny_cnn", seed=0,
                         train={"epochs": EPOCHS, "batch_size": 32, "max_steps_per_epoch": 3, "device": "cpu"})


def expected_tag(key: str) -> tuple[str, float]:
    if key in TAGS:
        return TAGS[key]
    assert key.startswith("train_"), f"metrics.jsonl key {key!r} has no expected tag"
    return f"train/{key.removeprefix('train_')}", 1.0


def stop_after_two(stop: type[BaseException]):
    """A report callback that stops the trial once epoch 2 is checkpointed (a kill, a Ctrl-C or a crash)."""
    def report(metrics):
        if metrics["epoch"] == 2:
            raise stop("stopped after epoch 2")
    return report


def per_epoch(records: list[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    return [r for r in records if r[0] not in FINAL.values()]


def test_a_trials_event_files_hold_its_epochs_test_numbers_and_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    tdir = tmp_path / "trial"
    reported = []
    run_one(spec().to_dict(), str(tdir), 1, reported.append)
    assert [m["epoch"] for m in reported] == [1, 2, 3]

    acc = EventAccumulator(str(tdir / "tb"))
    acc.Reload()
    recorded = read_metrics(tdir)
    assert any(k not in TAGS and k.startswith("train_") for k in recorded[0])  # the loss parts are there
    for key in recorded[0]:
        if key == "epoch":
            continue
        tag, factor = expected_tag(key)
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3], tag
        for e, row in zip(events, recorded, strict=True):
            assert e.value == pytest.approx(row[key] * factor, rel=1e-6), (tag, e.step)

    result = json.loads((tdir / "result.json").read_text())
    for key, tag in FINAL.items():
        [e] = acc.Scalars(tag)
        assert e.step == EPOCHS and e.value == pytest.approx(result[key], rel=1e-6), tag

    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == 1  # api_pb2.STATUS_SUCCESS
    stored = json.loads((tdir / "config.json").read_text())["spec"]
    hp = start.hparams
    assert hp["method"].string_value == stored["method"] == "zipf"
    assert (hp["dataset"].string_value, hp["model"].string_value) == (stored["dataset"], stored["model"])
    assert hp["seed"].number_value == stored["seed"] and hp["train.epochs"].number_value == EPOCHS
    assert hp["train.protocol"].string_value == stored["train"]["protocol"]
    assert hp["train.lr"].number_value == stored["train"]["lr"]
    assert hp["train.batch_size"].number_value == stored["train"]["batch_size"]
    assert stored["method_params"]
    for name, value in stored["method_params"].items():
        got = hp[f"method.{name}"]
        if isinstance(value, bool) or value is None:
            assert got.string_value == {True: "True", False: "False", None: "null"}[value], name
        elif isinstance(value, str):
            assert got.string_value == value, name
        else:
            assert got.number_value == pytest.approx(value), name


@pytest.mark.parametrize("stop, lost", [(KeyboardInterrupt, None), (RuntimeError, "checkpoint"),
                                        (KeyboardInterrupt, "curves")],
                         ids=["interrupted-resumes-from-checkpoint", "failed-restarts-from-scratch",
                              "event-files-lost-filled-from-metrics"])
def test_a_resumed_trial_logs_each_epoch_exactly_once(tmp_path, stop, lost):
    tdir = tmp_path / "trial"
    with pytest.raises(stop):
        run_one(spec().to_dict(), str(tdir), 1, stop_after_two(stop))
    first = read_metrics(tdir)
    assert [r["epoch"] for r in first] == [1, 2]
    # the stopped run's writer was closed: epoch 2 reached the disk
    assert sorted({step for _, step, _ in per_epoch(event_scalars(tdir / "tb"))}) == [1, 2]
    if lost == "checkpoint":  # the rerun trains epochs 1 and 2 again and reports them again
        for name in ("checkpoint.pt", "checkpoint.prev.pt"):
            (tdir / name).unlink(missing_ok=True)
    if lost == "curves":  # the rerun reports epoch 3 only: epochs 1 and 2 come from metrics.jsonl
        for path in (tdir / "tb").glob("events.out.tfevents.*"):
            path.unlink()

    reported = []
    run_one(spec().to_dict(), str(tdir), 1, reported.append)
    assert [m["epoch"] for m in reported] == ([1, 2, 3] if lost == "checkpoint" else [3])
    assert len(list((tdir / "tb").glob("events.out.tfevents.*"))) == (1 if lost == "curves" else 2)

    records = per_epoch(event_scalars(tdir / "tb"))
    seen = [(tag, step) for tag, step, _ in records]
    assert len(seen) == len(set(seen)), "an epoch was logged twice"
    # epochs 1-2 as the first run logged them, epoch 3 as the rerun recorded it
    expected = {r["epoch"]: r for r in first[:2] + read_metrics(tdir)[2:]}
    keys = [k for k in first[0] if k != "epoch"]
    assert sorted(seen) == sorted((expected_tag(k)[0], e) for k in keys for e in (1, 2, 3))
    for tag, step, value in records:
        key = next(k for k in keys if expected_tag(k)[0] == tag)
        assert value == pytest.approx(expected[step][key] * expected_tag(key)[1], rel=1e-6), (tag, step)


def test_unknown_metric_keys_keep_a_group():
    assert tag_of("test_top1") == "test/top1"
    assert tag_of("val_brier") == "val/brier"
    assert tag_of("data_time_s") == "time/data_s"
    assert tag_of("grad_norm") == "grad_norm"


def test_mlflow_sqlite_store_gets_one_run_per_trial_with_params_metrics_and_status(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from harness.sweep.live import MLFLOW_ENV

    monkeypatch.setenv(MLFLOW_ENV, check_mlflow(tmp_path / "mlruns"))
    tdir = tmp_path / "trial"
    with pytest.raises(KeyboardInterrupt):  # a resumed trial reuses its run
        run_one(spec("ce").to_dict(), str(tdir), 1, stop_after_two(KeyboardInterrupt))
    run_one(spec("ce").to_dict(), str(tdir), 1, lambda m: None)
    client = mlflow.MlflowClient(tracking_uri=check_mlflow(tmp_path / "mlruns"))
    runs = client.search_runs([client.get_experiment_by_name("tfbench").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    stored = json.loads((tdir / "config.json").read_text())["spec"]
    assert runs[0].data.params["method"] == "ce" and runs[0].data.params["train.epochs"] == str(EPOCHS)
    assert {k for k in runs[0].data.params if k.startswith("method.")} == {f"method.{k}" for k in stored["method_params"]}
    history = client.get_metric_history(runs[0].info.run_id, "val/top1")
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], r["val_top1"]) for r in read_metrics(tdir)]
    result = json.loads((tdir / "result.json").read_text())
    assert runs[0].data.metrics["test/selected_top1"] == pytest.approx(result["selected_top1"])
