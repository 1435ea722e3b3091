"""Checkpoints off the training path (harness/train/writer.py): snapshots are copies, the background writer keeps
the file format and the order, its errors surface, a stopped trial leaves whole files, `train.checkpoint_every`
writes on the epochs it names and resumes to the same numbers, and the wall time is accounted for."""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from helpers import quick_trial, read_metrics

import harness.train.writer as writer_module
from harness.cli import main
from harness.config.spec import TrainSettings, interval_seconds
from harness.train.checkpoint import read_checkpoint, save_checkpoint
from harness.train.loop import train_trial
from harness.train.writer import CheckpointWriter, snapshot

CPU = torch.device("cpu")
real_save = save_checkpoint


class Interrupt(Exception):
    pass


def quiet(_line):
    pass


def test_a_snapshot_is_a_copy_that_training_cannot_change():
    w, m = torch.arange(6.0).view(2, 3), np.arange(3)
    state = {"model": {"w": w}, "list": [w, 1, "x"], "tuple": (m, 2.5), "timing": {"steps": 3}}
    snap = snapshot(state, CPU)
    w.add_(100.0)
    m += 100
    state["timing"]["steps"] = 99
    assert snap["model"]["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert snap["list"][0].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and snap["list"][1:] == [1, "x"]
    assert snap["tuple"][0].tolist() == [0, 1, 2] and snap["tuple"][1] == 2.5 and type(snap["tuple"]) is tuple
    assert snap["timing"] == {"steps": 3}


def test_the_streamed_file_is_torch_save_bytes_plus_their_sha256_and_the_old_one_becomes_prev(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model={"w": torch.tensor([1.0, 2.0])}, epoch=1)
    save_checkpoint(path, model={"w": torch.tensor([3.0])}, epoch=2)
    data = path.read_bytes()
    payload, tag, digest = data[:-82], data[-82:-65], data[-65:-1]  # tag: 17 bytes, hex digest: 64, newline
    assert tag == b"\n#tfbench-sha256:" and data.endswith(b"\n")
    assert digest.decode() == hashlib.sha256(payload).hexdigest()
    assert torch.load(io.BytesIO(payload), weights_only=False)["model"]["w"].tolist() == [3.0]
    assert read_checkpoint(tmp_path / "checkpoint.prev.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_writer_keeps_the_order_and_its_errors_surface_at_the_next_save(tmp_path, monkeypatch):
    order, gate = [], threading.Event()

    def slow_first(path, **state):
        if not order:
            gate.wait(5)  # the first write is still running when the second is queued
        order.append(path.name)
        if path.name == "bad.pt":
            raise OSError(28, "No space left on device")
        real_save(path, **state)

    monkeypatch.setattr(writer_module, "save_checkpoint", slow_first)
    w = CheckpointWriter()
    for name in ("best.pt", "checkpoint.pt"):
        w.put(tmp_path / name, w.copy(tmp_path / name, {"model": {}, "epoch": 1}, CPU))
    gate.set()
    w.drain()
    assert order == ["best.pt", "checkpoint.pt"] and w.write_s > 0
    w.put(tmp_path / "bad.pt", {"model": {}, "epoch": 2})
    w.put(tmp_path / "after.pt", {"model": {}, "epoch": 2})
    with pytest.raises(OSError, match="No space left"):
        w.drain()
    with pytest.raises(OSError, match="No space left"):  # not swallowed once raised: every later save sees it
        w.copy(tmp_path / "checkpoint.pt", {"model": {}, "epoch": 3}, CPU)
    assert not (tmp_path / "after.pt").exists()  # the jobs after a failed one are dropped


def test_a_background_write_error_fails_the_trial_before_result_json(tmp_path, monkeypatch):
    def fail_at_epoch_2(path, **state):
        if state["epoch"] == 2 and path.name == "checkpoint.pt":
            raise OSError(28, "No space left on device")
        real_save(path, **state)

    monkeypatch.setattr(writer_module, "save_checkpoint", fail_at_epoch_2)
    with pytest.raises(OSError, match="No space left"):
        train_trial(quick_trial("ce", epochs=3), tmp_path, log=quiet)
    assert not (tmp_path / "result.json").exists()
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_a_stopped_trial_leaves_its_queued_checkpoint_whole_on_disk(tmp_path, monkeypatch):
    def slow(path, **state):
        time.sleep(0.3)  # still writing when the trial stops
        real_save(path, **state)

    monkeypatch.setattr(writer_module, "save_checkpoint", slow)

    def stop(m):
        raise Interrupt

    with pytest.raises(Interrupt):
        train_trial(quick_trial("ce", epochs=3), tmp_path, report=stop, log=quiet)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # no wait here: written before the raise
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def written_epochs(monkeypatch) -> list[tuple[str, int]]:
    saved = []

    def record(path, **state):
        saved.append((path.name, state["epoch"]))
        real_save(path, **state)

    monkeypatch.setattr(writer_module, "save_checkpoint", record)
    return saved


@pytest.mark.parametrize("every, epochs", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (5, [5]), ("1h", [5]),
                                           ("0.001s", [1, 2, 3, 4, 5])])
def test_checkpoint_every_writes_the_epochs_it_names_and_always_the_last(every, epochs, tmp_path, monkeypatch):
    saved = written_epochs(monkeypatch)
    train_trial(quick_trial("ce", epochs=5, protocol="paper", checkpoint_every=every), tmp_path, log=quiet)
    assert [e for name, e in saved if name == "checkpoint.pt"] == epochs


def test_checkpoint_false_writes_no_checkpoint_and_best_pt_once(tmp_path, monkeypatch):
    saved = written_epochs(monkeypatch)
    result = train_trial(quick_trial("ce", epochs=3, checkpoint=False), tmp_path, log=quiet)
    assert [name for name, _ in saved] == ["best.pt"] and not (tmp_path / "checkpoint.pt").exists()
    assert read_checkpoint(tmp_path / "best.pt")["epoch"] == result["selected_epoch"]
    assert result["checkpoint_write_time_s"] > 0


@pytest.mark.parametrize("method", ["pskd", "zipf"])
def test_sparse_checkpoints_resume_to_the_numbers_of_an_uninterrupted_run(method, tmp_path, monkeypatch):
    """checkpoint_every 2, stopped after epoch 3: the record's epoch 3 is trained again from epoch 2's checkpoint,
    and best.pt (written only with a checkpoint) holds that checkpoint's selection or the next one."""
    spec = quick_trial(method, epochs=5, steps=4, checkpoint_every=2)
    whole = train_trial(spec, tmp_path / "whole", log=quiet)

    def stop_after_3(m):
        if m["epoch"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_trial(spec, tmp_path / "cut", report=stop_after_3, log=quiet)
    assert len(read_metrics(tmp_path / "cut")) == 3 and read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    lines = []
    resumed = train_trial(spec, tmp_path / "cut", log=lines.append)
    assert any("resuming" in line and "epoch 2" in line for line in lines)
    assert read_metrics(tmp_path / "cut", untimed=True) == read_metrics(tmp_path / "whole", untimed=True)
    for k in ("selected_epoch", "selected_top1", "selected_nll", "last_top1", "last_nll"):
        assert resumed[k] == whole[k]


def test_the_wall_time_parts_show_a_slow_writer_and_a_slow_report(tmp_path, monkeypatch):
    write_s, report_s = 0.2, 0.15

    def slow(path, **state):
        time.sleep(write_s)
        real_save(path, **state)

    monkeypatch.setattr(writer_module, "save_checkpoint", slow)
    result = train_trial(quick_trial("ce", epochs=3, protocol="paper"), tmp_path,
                         report=lambda m: time.sleep(report_s), log=quiet)
    rows = read_metrics(tmp_path)
    parts = ("steps_time_s", "eval_time_s", "checkpoint_time_s", "other_time_s")
    # three checkpoint writes in the background, each at least write_s
    assert result["checkpoint_write_time_s"] >= 3 * write_s
    # the previous epoch's report is in the next line's other_time_s
    assert all(r["other_time_s"] >= report_s for r in rows[1:])
    # epoch_time_s leaves out the warm-up steps; steps_time_s is the whole epoch of steps
    assert all(r["steps_time_s"] >= r["epoch_time_s"] for r in rows)
    # the lines cover the epochs, the result the whole run: its parts are what the wall time holds
    assert sum(r[p] for r in rows for p in parts) <= result["wall_time_s"]
    assert abs(sum(result[p] for p in parts) - result["wall_time_s"]) < 1e-6
    assert result["other_time_s"] >= 2 * report_s  # the last report comes after the last line
    saved = json.loads((tmp_path / "result.json").read_text())
    assert all(saved[p] >= 0 for p in (*parts, "checkpoint_write_time_s"))


def test_checkpoint_every_is_checked_and_left_out_of_the_key(tmp_path, capsys):
    assert interval_seconds("10min") == 600 and interval_seconds("30s") == 30 and interval_seconds("1.5h") == 5400
    assert interval_seconds(3) is None
    for bad in (0, True, 2.5, "10m", "10 min", "0s", "soon"):
        with pytest.raises(ValueError, match="a whole number of epochs >= 1, or a time interval"):
            TrainSettings(checkpoint_every=bad)
    assert quick_trial("ce", checkpoint_every="10min").key() == quick_trial("ce").key()
    code = main(["train", "--method", "ce", "--dataset", "digits", "--epochs", "1", "--set",
                 "train.checkpoint_every=10m", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "checkpoint_every" in err and "10m" in err


def test_best_pt_is_written_with_the_next_checkpoint_so_a_resume_finds_the_selection(tmp_path):
    """Selections at epochs 3, 4 and 5 with checkpoints every 3 epochs: until epoch 6's checkpoint, best.pt stays
    at epoch 3 (the selection of the checkpoint a kill would resume from); then 5, with 3 as best.prev.pt."""
    from harness.train.writer import Checkpoints

    saves = Checkpoints(tmp_path, every=3, enabled=True, keeps_best=True, device=CPU)
    for epoch in range(1, 7):
        if epoch in (3, 4, 5):
            saves.improved({"w": torch.tensor([float(epoch)])}, epoch=epoch, val_top1=epoch / 10)
        if saves.due(epoch, final=epoch == 6):
            saves.take({"model": {}, "epoch": epoch, "best": {"epoch": 3 if epoch < 6 else 5}})
        saves.commit()
        saves.writer.drain()
        if epoch in (3, 4, 5):
            assert read_checkpoint(tmp_path / "best.pt")["epoch"] == 3
    saves.finish()
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 6
    assert read_checkpoint(tmp_path / "best.pt")["model"]["w"].tolist() == [5.0]
    assert read_checkpoint(tmp_path / "best.prev.pt")["epoch"] == 3
