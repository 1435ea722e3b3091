"""A method parameter is checked when its trial is resolved, and trusted from there: `lam` of a Zipf's LS
entry is checked at most twice (its type where it stands in the sweep file, its range when the grid point is
resolved) on its way from the file to the first loss."""
from __future__ import annotations

import importlib
import textwrap

import torch
from helpers import write_sweep_file

import methods.params
from harness.config.spec import TrialSpec
from harness.config.sweep_file import load_sweep
from harness.train.loop import train_trial
from methods.zipf import Zipf

# every module that calls the one parameter validator (grep check_params)
CALLERS = ("methods.base", "methods.params", "harness.config.resolve", "harness.config.sweep_file",
           "harness.config.search", "harness.data.registry")


def test_lam_is_checked_at_most_twice_from_the_sweep_file_to_the_loss(tmp_path, monkeypatch):
    checks: list[str] = []
    real = methods.params.check_params

    def counting(params_cls, values):
        if params_cls is Zipf.Params and "lam" in values:
            checks.append("type")
        return real(params_cls, values)

    for name in CALLERS:
        monkeypatch.setattr(importlib.import_module(name), "check_params", counting, raising=False)
    real_validate = Zipf.validate
    monkeypatch.setattr(Zipf, "validate", lambda self: (checks.append("range"), real_validate(self))[1])

    path = write_sweep_file(tmp_path, textwrap.dedent("""\
        schema_version: 1
        name: once
        methods: [{name: zipf, params: {lam: [0.5]}}]
        datasets: [digits]
        models: [tiny_cnn]
        train: {epochs: 1, batch_size: 64, max_steps_per_epoch: 1, threads: 1}
        """))
    (spec,) = load_sweep(path).trials
    worker_spec = TrialSpec.from_dict(spec.to_dict())  # what a Ray worker receives
    torch.set_num_threads(1)
    losses = []
    real_loss = Zipf.loss
    monkeypatch.setattr(Zipf, "loss", lambda self, *a: losses.append(1) or real_loss(self, *a))
    train_trial(worker_spec, tmp_path / "trial", log=lambda line: None)
    assert losses and worker_spec.method_params["lam"] == 0.5
    assert checks == ["type", "range"]
