"""A dataset default changes between two runs: the finished trial is reported stale, not reused and not
deleted; `--rerun-stale` retrains it under its new key and keeps the old folder under stale/.

The first trial is trained with `train_trial` directly (no Ray); only the retraining goes through Ray."""
from __future__ import annotations

import json

import pytest
from helpers import set_dataset_default, write_sweep_file

from harness.cli import main
from harness.config.sweep_file import load_sweep
from harness.train.loop import train_trial

SWEEP = """\
schema_version: 1
name: stale
methods: [ce]
datasets: [digits]
models: [tiny_cnn]
seeds: [0]
train: {epochs: 1, batch_size: 64, max_steps_per_epoch: 2}
resources: {cpus_per_trial: 1, max_concurrent: 1}
retries: 0
"""


@pytest.mark.slow
def test_a_changed_dataset_default_makes_a_finished_trial_stale_and_rerun_stale_retrains_it(
        tmp_path, monkeypatch, capsys):
    path = write_sweep_file(tmp_path, SWEEP)
    results = tmp_path / "results"
    folder = results / "stale"
    old = load_sweep(path).trials[0]
    train_trial(old, folder / "trials" / old.key())
    assert json.loads((folder / "trials" / old.key() / "result.json").read_text())["status"] == "finished"

    set_dataset_default(monkeypatch, "digits", "val_fraction", 0.25)
    new = load_sweep(path).trials[0]
    assert new.key() != old.key()

    capsys.readouterr()
    assert main(["run", str(path), "--results", str(results), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "1 finished trial(s) of ce on digits (tiny_cnn) no longer match" in err
    assert "dataset_params.val_fraction 0.2 -> 0.25" in err and "--rerun-stale" in err
    assert sorted(p.name for p in (folder / "trials").iterdir()) == [old.key()]  # not reused, not deleted
    assert not (folder / "sweep.yaml").exists()

    assert main(["run", str(path), "--results", str(results), "--no-progress", "--rerun-stale"]) == 0
    assert json.loads((folder / "trials" / new.key() / "result.json").read_text())["status"] == "finished"
    stored = json.loads((folder / "trials" / new.key() / "config.json").read_text())["spec"]
    assert stored["dataset_params"]["val_fraction"] == 0.25
    assert (folder / "stale" / old.key() / "result.json").exists()
    assert not (folder / "trials" / old.key()).exists()
