"""The controlled cost measurement (`tfbench bench step --sweep`, harness/bench/costs.py, read by
harness/results/costs.py): the configurations it plans, the model and input it builds (against the trial's own
factory), the ratios from raw times (by hand), the cache (reused, invalidated), and the summary taking its
numbers. Never a timing threshold: the timer and the memory probe are replaced by fixed numbers where a number
is checked."""
from __future__ import annotations

import csv
import io
import json
import statistics

import pandas as pd
import pytest
import torch
from helpers import quick_trial, write_sweep_file

import harness.bench.costs as bc
from harness.cli import main
from harness.config.resolve import resolve_trial
from harness.folders import ResultsFolder
from harness.results import costs as store
from harness.results import records
from harness.results.summary import render_summary
from harness.train.loop import train_trial
from harness.train.parts import build_parts

CPU = torch.device("cpu")


def spec(method: str, *, seed: int = 0, dataset: str = "synthetic", batch: int = 32, **params):
    return resolve_trial(method=method, dataset=dataset, model="tiny_cnn", seed=seed, method_params=params,
                         train=dict(epochs=2, batch_size=batch, max_steps_per_epoch=3))


# --- what is measured --------------------------------------------------------------------------------------

def test_one_configuration_per_method_setting_each_with_its_ce_reference():
    specs = [spec("ce", seed=s) for s in (0, 1)] + [spec("zipf", seed=s, lam=lam) for lam in (0.1, 0.5)
                                                     for s in (0, 1)]
    specs += [spec("ls", seed=0, batch=16)]  # other train settings: a CE reference of its own is measured
    [(cell, configs)] = bc.plan_cells(specs).items()
    assert cell == ("synthetic", "tiny_cnn")
    ce32, ce16 = (store.reference_key(s.to_dict()) for s in (specs[0], specs[-1]))
    assert [c.key for c in configs][:2] == [ce32, ce16]  # the references first
    by = {c.key: c for c in configs}
    assert by[ce32].trials == [specs[0].key(), specs[1].key()] and by[ce16].trials == []  # ce16: not in the sweep
    assert by[ce16].spec.method == "ce" and by[ce16].spec.train.batch_size == 16
    zipf = [c for c in configs if c.spec.method == "zipf"]
    assert [c.spec.method_params["lam"] for c in zipf] == [0.1, 0.5] and all(c.reference == ce32 for c in zipf)
    assert [len(c.trials) for c in zipf] == [2, 2]  # the seeds share a configuration: one measurement
    assert [c.label for c in zipf] == ["zipf (lam=0.1)", "zipf (lam=0.5)"]
    ls = [c for c in configs if c.spec.method == "ls"]
    assert [c.reference for c in ls] == [ce16] and ls[0].label == "ls"


def test_the_key_changes_with_what_a_step_costs_and_only_with_that():
    a = spec("zipf", lam=0.1).to_dict()
    same = [spec("zipf", lam=0.1, seed=3).to_dict(),
            {**a, "train": {**a["train"], "epochs": 50, "lr": 0.5, "select": "last"}}]
    other = [spec("zipf", lam=0.5).to_dict(), spec("zipf", lam=0.1, batch=16).to_dict(),
             spec("zipf", lam=0.1, dataset="digits").to_dict(),
             {**a, "train": {**a["train"], "compile": True}}, {**a, "model_params": {"drop_rate": 0.1}}]
    assert all(store.cost_key(s) == store.cost_key(a) for s in same)
    assert len({store.cost_key(s) for s in [a, *other]}) == 1 + len(other)


@pytest.mark.parametrize("method,dataset", [("zipf", "synthetic"), ("pskd", "digits"), ("cskd", "digits")])
def test_the_sweep_path_builds_the_trials_model_and_input(method, dataset):
    s = spec(method, dataset=dataset, batch=8)
    case = bc.build_config_case(s, CPU)
    torch.manual_seed(s.seed)  # the trial's own factory, as train_trial's build_rig calls it
    bundle, model, m = build_parts(s, CPU)
    assert type(case.rig.model) is type(model)
    assert sum(p.numel() for p in case.rig.model.parameters()) == sum(p.numel() for p in model.parameters())
    extra = m.extra_modules()
    assert sum(p.numel() for p in case.rig.params) == sum(p.numel() for p in model.parameters()) + (
        sum(p.numel() for p in extra.parameters()) if extra is not None else 0)
    for a, b in zip(case.rig.model.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)  # the same initial weights as the trial under its seed
    assert tuple(case.x.shape) == (8, bundle.in_chans, bundle.input_size, bundle.input_size)
    assert (case.xp is not None) == (method == "cskd") and case.y.max() < bundle.num_classes
    assert case.rig.method.params == m.params  # the resolved parameters, not a preset
    assert case.rig.method.state_nbytes() == m.state_nbytes()  # PS-KD: a row per image of the training split
    assert model(case.x).shape == (8, bundle.num_classes)


# --- the ratios, by hand ---------------------------------------------------------------------------------

def record(**rounds) -> dict:
    peaks = {"ce": 1000, "zipf": 1500, "ls": None}
    return {"format": store.FORMAT, "status": store.MEASURED,
            "configs": [{"key": m, "reference": "ce", "round_s": r, "peak_bytes": peaks[m]} for m, r in rounds.items()]}


def test_ratios_from_the_raw_round_times():
    ce, zipf = [0.010, 0.012, 0.011, 0.013], [0.013, 0.015, 0.012, 0.016]
    r = store.config_ratios(record(ce=ce, zipf=zipf, ls=[0.011, 0.012, 0.010, 0.014]))
    # medians 0.0115 and 0.014: time x = 0.014 / 0.0115
    assert r["zipf"]["time_x"] == pytest.approx(0.014 / 0.0115)
    assert r["zipf"]["step_s"] == pytest.approx(0.014) and r["zipf"]["ref_step_s"] == pytest.approx(0.0115)
    per_round = [1.3, 1.25, 12 / 11, 16 / 13]
    assert r["zipf"]["time_x_rounds_sd"] == pytest.approx(statistics.stdev(per_round))
    assert r["zipf"]["time_rounds_sd_rel"] == pytest.approx(statistics.stdev(zipf) / 0.014)
    assert r["zipf"]["mem_x"] == 1.5 and r["ce"]["time_x"] == 1.0 and r["ce"]["time_x_rounds_sd"] == 0.0
    assert r["ls"]["time_x"] == pytest.approx(0.0115 / 0.0115) and r["ls"]["mem_x"] != r["ls"]["mem_x"]  # NaN


# --- the cache -------------------------------------------------------------------------------------------

@pytest.fixture
def fake_measure(monkeypatch):
    """measure_cell replaced: counts its calls, returns a measured record of fixed times (or raises)."""
    calls: list[list[str]] = []
    fail = {"on": False}

    def measure_cell(cell, configs, *, device, threads, **kw):
        calls.append([c.key for c in configs])
        if fail["on"]:
            raise RuntimeError("out of memory")
        rows = [{"key": c.key, "reference": c.reference, "method": c.spec.method, "label": c.label,
                 "trials": c.trials, "round_s": [0.01, 0.02], "peak_bytes": 1, "state_bytes": 0,
                 "batch": 32, "input_shape": [3, 8, 8], "parameters": 1} for c in configs]
        return {**bc._head(cell, configs, device, threads), "status": store.MEASURED, "error": None, "repeats": 2,
                "warmup": 0, "window": 1, "memory_kind": "fake", "seconds": 0.0, "configs": rows}

    monkeypatch.setattr(bc, "measure_cell", measure_cell)
    return calls, fail


def test_a_cell_is_measured_once_reused_and_remeasured_when_it_changed(tmp_path, fake_measure):
    calls, fail = fake_measure
    specs = [spec("ce"), spec("ls")]
    measure = dict(cpus_per_trial=1, gpus_per_trial=0, results_dir=tmp_path, log=lambda s: None)
    [o] = bc.measure_sweep(specs, **measure)
    path = tmp_path / "costs" / "synthetic_tiny_cnn.json"
    assert len(calls) == 1 and not o.reused and o.path == path
    saved = json.loads(path.read_text())
    assert saved["key"] == store.cell_key(calls[0], device="cpu", threads=1)
    assert {"device", "threads", "torch", "git", "repeats", "configs"} <= set(saved)
    assert ".tfbench-outputs.json" in {p.name for p in (tmp_path / "costs").iterdir()}  # harness/outputs.py's record

    [o] = bc.measure_sweep(specs + [spec("ls", seed=1)], **measure)  # another seed: the same configurations
    assert len(calls) == 1 and o.reused and o.record == saved
    bc.measure_sweep(specs + [spec("ls", form="uniform")], **measure)  # a configuration added
    assert len(calls) == 2
    bc.measure_sweep(specs, **{**measure, "cpus_per_trial": 2})       # the trials' threads changed
    assert len(calls) == 3
    bc.measure_sweep(specs, **{**measure, "cpus_per_trial": 2})
    assert len(calls) == 3
    bc.measure_sweep(specs, **{**measure, "cpus_per_trial": 2}, force=True)
    assert len(calls) == 4
    fail["on"] = True
    [o] = bc.measure_sweep(specs, **measure)
    assert o.record["status"] == "failed" and "out of memory" in json.loads(path.read_text())["error"]
    fail["on"] = False
    bc.measure_sweep(specs, **measure)  # a failed file is measured again
    assert len(calls) == 6 and json.loads(path.read_text())["status"] == store.MEASURED


def test_a_gpu_sweep_is_not_measured_on_a_machine_without_one(tmp_path, fake_measure, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    [o] = bc.measure_sweep([spec("ce")], cpus_per_trial=1, gpus_per_trial=1, results_dir=tmp_path,
                           log=lambda s: None)
    assert not fake_measure[0] and o.record["status"] == "failed" and "no CUDA device" in o.record["error"]


# --- the summary -----------------------------------------------------------------------------------------

ROUNDS = {"ce": [0.010, 0.012, 0.011], "zipf": [0.013, 0.016, 0.012]}
PEAKS = {"ce": 4000, "zipf": 5000}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A results folder of four tiny trials (CE and Zipf's LS, two seeds), trained in-process."""
    folder = tmp_path_factory.mktemp("sweep")
    specs = [quick_trial(m, seed=s, steps=2) for m in ("ce", "zipf") for s in (0, 1)]
    for s in specs:
        train_trial(s, folder / "trials" / s.key(), log=lambda _: None)
    records.write_trials_csv(folder, [(s.key(), s.to_dict()) for s in specs])
    ResultsFolder(folder).write_sweep_record({"file": {"name": "t"}, "trials": [
        {"key": s.key(), "spec": s.to_dict()} for s in specs]})
    return folder, specs


def fixed_timer(monkeypatch):
    """round_robin and the memory probe replaced by fixed numbers, per method, in the cell's order."""
    def round_robin(cases, *, warmup, repeats, window=10, **kw):
        full = {k: list(ROUNDS[case.name]) if repeats > 1 else [0.001] for k, case in cases.items()}
        return {k: [float("nan")] * len(v) for k, v in full.items()}, full

    peaks = iter([PEAKS["ce"], PEAKS["zipf"]])
    monkeypatch.setattr(bc, "round_robin", round_robin)
    monkeypatch.setattr(bc, "_forked_peak", lambda build, timeout=0: next(peaks))


def summary_rows(folder) -> dict[str, dict[str, str]]:
    rows = csv.DictReader(io.StringIO(render_summary(folder, warn=lambda _: None, write=False)["csv"]))
    return {r["method"]: r for r in rows}


def test_the_summary_takes_time_x_from_the_controlled_measurement(trained, monkeypatch):
    folder, specs = trained
    fixed_timer(monkeypatch)
    [o] = bc.measure_folder(folder, log=lambda s: None)
    assert o.record["status"] == store.MEASURED and [c["method"] for c in o.record["configs"]] == ["ce", "zipf"]
    assert o.record["configs"][1]["trials"] == [s.key() for s in specs if s.method == "zipf"]
    rows = summary_rows(folder)
    z = rows["zipf"]
    assert float(z["time_x"]) == pytest.approx(0.013 / 0.011)  # medians of the rounds, by hand
    assert float(z["mem_x"]) == pytest.approx(5000 / 4000)
    assert float(rows["ce"]["time_x"]) == 1.0 and z["cost_status"] == store.MEASURED
    # the sweep's own step times, kept as what they are
    t = records.load_trials(folder, warn=lambda _: None, write=False)
    observed = t[t["method"] == "zipf"]["step_time_s"].mean() / t[t["method"] == "ce"]["step_time_s"].mean()
    assert float(z["time_x_observed"]) == pytest.approx(observed)
    md = render_summary(folder, warn=lambda _: None, write=False)["md"]
    assert "Costs (time x, memory x) of synthetic / tiny_cnn: controlled measurement (tfbench bench step --sweep" in md
    assert f"{0.013 / 0.011:.2f}x" in md and "observed in this sweep, on a shared machine" in md
    # trials.csv is the trials' own: no cost column written into it
    assert "cost_time_x" not in (folder / "trials.csv").read_text()


def test_without_a_fitting_measurement_the_summary_says_so(trained, tmp_path):
    folder, specs = trained
    for name in ("trials", "trials.csv", "sweep.yaml"):  # a copy of the folder, without costs/
        src = folder / name
        (tmp_path / name).symlink_to(src, target_is_directory=src.is_dir())
    rows = summary_rows(tmp_path)
    assert rows["zipf"]["time_x"] == "" and rows["zipf"]["cost_status"] == "not measured"
    md = render_summary(tmp_path, warn=lambda _: None, write=False)["md"]
    assert "Costs (time x, memory x) of synthetic / tiny_cnn: not measured (n/a in the tables" in md
    # a file measured for other configurations is stale, never used
    other = record(ce=[0.01, 0.01], zipf=[0.02, 0.02])
    (tmp_path / "costs").mkdir()
    (tmp_path / "costs" / "synthetic_tiny_cnn.json").write_text(json.dumps(other))
    assert "(stale)" in summary_rows(tmp_path)["zipf"]["cost_status"]


def test_switched_off_in_the_sweep_file(tmp_path):
    ResultsFolder(tmp_path).write_sweep_record({"file": {"costs": {"measure": False}}, "trials": []})
    assert store.switched_off(tmp_path)
    s = spec("ce").to_dict()
    (tmp_path / "trials" / "k").mkdir(parents=True)
    (tmp_path / "trials" / "k" / "config.json").write_text(json.dumps({"key": "k", "spec": s}))
    t = store.with_costs(pd.DataFrame({"key": ["k"]}), tmp_path)
    assert t["cost_status"].iloc[0] == "not measured (the sweep file says costs: {measure: false})"


def test_run_skips_the_measurement_when_the_sweep_file_says_so(tmp_path):
    from harness.cli.run import measure_costs
    from harness.config.sweep_file import load_sweep

    text = "schema_version: 1\nname: s\nmethods: [ce]\ndatasets: [synthetic]\nmodels: [tiny_cnn]\n"
    assert measure_costs(load_sweep(write_sweep_file(tmp_path, text))) is not None
    off = load_sweep(write_sweep_file(tmp_path, text + "costs: {measure: false}\n", name="off.yaml"))
    assert measure_costs(off) is None
    with pytest.raises(Exception, match="measure"):
        load_sweep(write_sweep_file(tmp_path, text + "costs: {measure: sometimes}\n", name="bad.yaml"))


def test_bench_step_sweep_refuses_what_the_sweep_decides(tmp_path, capsys):
    path = write_sweep_file(tmp_path, "schema_version: 1\nname: s\nmethods: [ce]\ndatasets: [synthetic]\n")
    assert main(["bench", "step", "--sweep", str(path), "--batch", "8", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--batch, --device cannot be given with --sweep" in err and len(err.strip().splitlines()) == 1
    assert main(["table", str(tmp_path), "--measure-costs", "--out", str(tmp_path / "o")]) == 2
    assert "cannot be given with --out" in capsys.readouterr().err
