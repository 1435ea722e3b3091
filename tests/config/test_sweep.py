"""Sweep files: validation (every problem, one line each, exit 2, nothing written), expansion and defaults,
and one test per shipped sweep file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import scaled_ce_source, write_sweep_file

from harness.cli import main
from harness.config.sweep_file import SweepError, load_sweep

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "sweeps").rglob("*.yaml"))

GOOD = """\
schema_version: 1
name: t
methods: [ce, {name: zipf, params: {alpha: [0.5, 1.0]}}]
datasets: [digits]
models: [tiny_cnn]
seeds: [0, 1]
train: {epochs: 2}
"""


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_sweep_file_loads_and_dry_runs(path, capsys, tmp_path, monkeypatch):
    import yaml

    source = (yaml.safe_load(path.read_text()) or {}).get("transfer_from")
    if source:  # a transfer sweep reads its source's finished trials: two written by hand, from tmp_path
        monkeypatch.chdir(tmp_path)
        for method, seed in (("ce", 0), ("zipf", 0)):
            trial = tmp_path / source / "trials" / f"{method}-s{seed}"
            trial.mkdir(parents=True)
            spec = {"method": method, "model": "tiny_cnn", "seed": seed, "method_params": {}, "model_params": {}}
            (trial / "config.json").write_text(json.dumps({"key": trial.name, "spec": spec}))
            (trial / "result.json").write_text(json.dumps({"status": "finished"}))
            (trial / "best.pt").write_bytes(b"weights")
    sweep = load_sweep(path)
    assert sweep.trials and len({t.key() for t in sweep.trials}) == len(sweep.trials)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# Run:"), "every sweep file starts with the command that runs it"
    assert main(["run", str(path), "--dry-run"]) == 0
    assert f"{len(sweep.trials)} trials" in capsys.readouterr().out


def test_quickstart_is_seven_methods_times_three_seeds_on_digits():
    sweep = load_sweep(REPO / "sweeps" / "quickstart.yaml")
    assert len(sweep.trials) == 21
    assert {t.method for t in sweep.trials} == {"ce", "ls", "tfkd", "pskd", "cskd", "ols", "zipf"}
    assert {t.seed for t in sweep.trials} == {0, 1, 2} and {t.dataset for t in sweep.trials} == {"digits"}


def test_expansion_counts_grids_and_seeds(tmp_path):
    sweep = load_sweep(write_sweep_file(tmp_path, GOOD))
    assert len(sweep.trials) == (1 + 2) * 2
    alphas = sorted(t.method_params["alpha"] for t in sweep.trials if t.method == "zipf")
    assert alphas == [0.5, 0.5, 1.0, 1.0]


def test_paper_presets_fill_what_the_file_does_not_say(tmp_path):
    text = GOOD.replace("datasets: [digits]", "datasets: [cifar100, tinyimagenet, imagenet]").replace(
        "models: [tiny_cnn]", "models: [cifar_preact_resnet18]")
    trials = [t for t in load_sweep(write_sweep_file(tmp_path, text)).trials if t.method == "zipf"]
    by = {t.dataset: t.method_params for t in trials}
    # the seed's Table 2
    assert by["cifar100"]["lam"] == 0.1 and by["cifar100"]["beta"] == 0.1 and by["cifar100"]["extra_dense_layer"]
    assert by["tinyimagenet"]["lam"] == 1.0 and by["tinyimagenet"]["beta"] == 0.5
    assert by["imagenet"]["lam"] == 0.1 and not by["imagenet"]["extra_dense_layer"]
    recipes = {t.dataset: t.train.recipe for t in trials}
    assert recipes == {"cifar100": "zipf", "tinyimagenet": "zipf", "imagenet": "imagenet"}


def test_explicit_values_beat_dataset_defaults_beat_presets_and_set_beats_all(tmp_path):
    text = GOOD.replace("datasets: [digits]", "datasets: [cifar100]") + \
        "dataset_defaults:\n  cifar100: {train: {epochs: 7}, methods: {zipf: {lam: 0.5, beta: 0.3}}}\n"
    text = text.replace("params: {alpha: [0.5, 1.0]}", "params: {alpha: 1.0, beta: 0.05}")
    t = [t for t in load_sweep(write_sweep_file(tmp_path, text)).trials if t.method == "zipf"][0]
    assert t.method_params["lam"] == 0.5 and t.method_params["beta"] == 0.05 and t.train.epochs == 7
    t = [t for t in load_sweep(write_sweep_file(tmp_path, text), ["method.lam=0.9", "train.epochs=3"]).trials
         if t.method == "zipf"][0]
    assert t.method_params["lam"] == 0.9 and t.train.epochs == 3


def test_keys_are_stable_and_ignore_the_data_root(tmp_path):
    # (a dataset read from files: digits is built in and takes no root)
    a = load_sweep(write_sweep_file(tmp_path, GOOD.replace("datasets: [digits]", "datasets: [cifar10]"))).trials
    b = load_sweep(write_sweep_file(tmp_path, GOOD.replace("datasets: [digits]", "datasets: [{name: cifar10, params: {root: /x}}]"))).trials
    assert [t.key() for t in a] == [t.key() for t in b]
    c = load_sweep(write_sweep_file(tmp_path, GOOD.replace("datasets: [digits]", "datasets: [cifar10]").replace("epochs: 2", "epochs: 3"))).trials
    assert not {t.key() for t in a} & {t.key() for t in c}


BAD = [
    ("schema_version: 2\n" + GOOD.split("\n", 1)[1], "schema_version: found 2; allowed: 1"),
    (GOOD.replace("methods:", "method:"), "method: unknown key (did you mean 'methods'?)"),
    (GOOD.replace("[ce,", "[cee,"), "unknown method 'cee' (did you mean 'ce'?)"),
    (GOOD.replace("[digits]", "[digitz]"), "unknown dataset 'digitz' (did you mean 'digits'?)"),
    (GOOD.replace("[0.5, 1.0]", "[]"), "empty list"),
    (GOOD.replace("seeds: [0, 1]", "seeds: [-1]"), "seeds[0]: found -1"),
    (GOOD.replace("seeds: [0, 1]", "seeds: [0, 0]"), "duplicated seeds"),
    (GOOD.replace("seeds: [0, 1]", "seeds: []"), "seeds: found []"),
    (GOOD.replace("epochs: 2", "epochs: two"), "train.epochs: found 'two'"),
    (GOOD.replace("epochs: 2", "epoch: 2"), "train.epoch: unknown key (did you mean 'epochs'?)"),
    (GOOD.replace("[0.5, 1.0]", "[-1.0]"), "'alpha'"),
    (GOOD.replace("alpha:", "alpah:"), "unknown parameter 'alpah' (did you mean 'alpha'?)"),
    (GOOD + "resources: {gpus_per_trial: -1}\n", "resources.gpus_per_trial: found -1"),
    (GOOD + "resources: {cpus: 2}\n", "resources.cpus: unknown key"),
    (GOOD + "resources: {workers_per_trial: 0}\n", "resources.workers_per_trial: found 0"),
    (GOOD.replace("name: t", "name: ../evil"), "name: found '../evil'"),
    (GOOD + "imports: [no_such_file.py]\n", "no such file"),
    ("methods: [ce\n", "not valid YAML"),
    ("- just\n- a list\n", "top level: found list"),
    (GOOD.replace("models: [tiny_cnn]", "models: [tiny_cnn, tiny_cnn]"), "duplicated names"),
]


@pytest.mark.parametrize("text, expected", BAD, ids=[b[1][:40] for b in BAD])
def test_malformed_files_give_one_line_per_problem_exit_2_and_write_nothing(text, expected, tmp_path, capsys):
    path = write_sweep_file(tmp_path, text)
    results = tmp_path / "results"
    code = main(["run", str(path), "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err, err
    assert "Traceback" not in err
    assert all(line.startswith(("tfbench: error:", str(path))) for line in err.strip().splitlines())
    assert not results.exists()


def test_all_problems_are_reported_in_one_pass(tmp_path):
    text = GOOD.replace("[ce,", "[cee,").replace("seeds: [0, 1]", "seeds: [-1]").replace("epochs: 2", "epoch: 2")
    with pytest.raises(SweepError) as e:
        load_sweep(write_sweep_file(tmp_path, text))
    assert len(e.value.problems) == 3


def test_a_method_file_that_raises_on_import_is_one_line(tmp_path, capsys):
    path = write_sweep_file(tmp_path, GOOD + "imports: [bad_method.py]\n",
                            beside={"bad_method.py": "raise RuntimeError('boom at import')\n"})
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: boom at import" in err and "Traceback" not in err


def test_a_user_method_from_imports_is_used_by_name(tmp_path, capsys):
    from methods import METHODS

    METHODS.unregister("scaled_ce_test")
    path = write_sweep_file(tmp_path, GOOD.replace("[ce,", "[scaled_ce_test,") + "imports: [my_method.py]\n",
                            beside={"my_method.py": scaled_ce_source("scaled_ce_test")})
    sweep = load_sweep(path)
    assert {t.method for t in sweep.trials} == {"scaled_ce_test", "zipf"}
    spec = [t for t in sweep.trials if t.method == "scaled_ce_test"][0]
    assert spec.method_params == {"scale": 1.0}
    assert spec.imports == (str((tmp_path / "my_method.py").resolve()),)
