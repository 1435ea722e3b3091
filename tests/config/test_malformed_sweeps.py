"""Malformed sweep files written by hand: each gives exit 2, exactly one line per problem (all
problems of the file, each once), no traceback, nothing written, no Ray started, within 2 s.

Unlike test_fuzz_sweep.py, the real runner is not replaced: the resource checks in `run_sweep`'s start must
also answer before anything is written or started.
"""
from __future__ import annotations

import time

import pytest
from helpers import write_sweep_file

from harness.cli import main

GOOD = """\
schema_version: 1
name: t
methods: [ce, {name: zipf, params: {alpha: [0.5, 1.0]}}]
datasets: [digits]
models: [tiny_cnn]
seeds: [0, 1]
train: {epochs: 1}
"""


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def alias_bomb(levels: int, under: str = "junk") -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, levels)]
    return GOOD + f"{under}:\n" + "\n".join("  " + line for line in lines) + "\n"


def merge_bomb(levels: int) -> str:
    lines = ["m0: &m0 {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1}"]
    lines += [f"m{i}: &m{i} {{a: *m{i - 1}, b: *m{i - 1}, c: *m{i - 1}, d: *m{i - 1}, e: *m{i - 1}, "
              f"f: *m{i - 1}, g: *m{i - 1}, h: *m{i - 1}, <<: *m{i - 1}}}" for i in range(1, levels)]
    return GOOD + "dataset_defaults:\n" + "\n".join("  " + line for line in lines) + "\n"


LAMS = ", ".join(f"0.{i:03d}1" for i in range(100))
GRID_BOMB = f"""\
schema_version: 1
name: grid
methods: [{{name: zipf, params: {{lam: [{LAMS}], alpha: [{LAMS}], beta: [{LAMS}]}}}}]
datasets: [digits]
seeds: {{count: 1000}}
"""

# (id, file text, [text of each problem: each must appear exactly once, one line each], extra CLI args)
CASES: list[tuple[str, str | bytes, list[str], list[str]]] = [
    ("model typo", replace("models: [tiny_cnn]", "models: [tiny_cnnn]"),
     [":5: models[0]: unknown model 'tiny_cnnn' (did you mean 'tiny_cnn'?)"], []),
    ("unknown timm model", replace("models: [tiny_cnn]", "models: [tiny_cnn, resnet50x]"),
     ["models[1]: unknown model 'resnet50x' (did you mean 'resnet50"], []),
    ("dataset_defaults dataset typo", GOOD + "dataset_defaults: {digit: {train: {epochs: 3}}}\n",
     [":8: dataset_defaults.digit: unknown dataset 'digit' (did you mean 'digits'?)"], []),
    ("dataset_defaults method typo", GOOD + "dataset_defaults: {digits: {methods: {zipff: {lam: 0.3}}}}\n",
     ["dataset_defaults.digits.methods.zipff: unknown method 'zipff' (did you mean 'zipf'?)"], []),
    ("dataset_defaults block key typo", GOOD + "dataset_defaults: {digits: {trian: {epochs: 3}}}\n",
     ["dataset_defaults.digits.trian: unknown key (did you mean 'train'?)"], []),
    ("dataset_defaults train value", GOOD + "dataset_defaults: {digits: {train: {epochs: 0}}}\n",
     ["dataset_defaults.digits.train.epochs: found 0; allowed: >= 1"], []),
    ("dataset_defaults method param", GOOD + "dataset_defaults: {digits: {methods: {zipf: {lamb: 0.3}}}}\n",
     ["unknown parameter 'lamb' (did you mean 'lam'?) of method 'zipf'"], []),
    ("dataset_defaults model", GOOD + "dataset_defaults: {digits: {model: tiny_cnnn}}\n",
     ["dataset_defaults.digits.model: unknown model 'tiny_cnnn'"], []),
    ("grid product", GRID_BOMB, ["the sweep expands to 1,000,000,000 trials (methods[0] (zipf) on digits: 100 x 100 x 100 x 1 x 1000 seeds"], []),
    ("alias bomb under an unknown key", alias_bomb(9), ["expands to more than 100,000 values"], []),
    ("merge-key bomb", merge_bomb(8), ["expands to more than 100,000 values"], []),
    ("a bad train value is reported once, not per method", replace("epochs: 1", "epochs: 1, lr: fast"),
     [":7: train.lr: found 'fast'; allowed: a number"], []),
    ("every problem in one pass", replace("seeds: [0, 1]", "seeds: [-1]").replace("alpha: [0.5, 1.0]", "lam: -0.5")
     + "retry: 1\n", ["retry: unknown key (did you mean 'retries'?)", "seeds[0]: found -1", "'lam'"], []),
    ("four levels at once", replace("epochs: 1", "epochs: 1, momentun: 0.9").replace("seeds: [0, 1]", "seeds: {count: 0}")
     + "dataset_defaults: {digits: {methods: {lss: {epsilon: 0.2}}}}\nresources: {cpus_per_trail: 1}\n",
     ["train.momentun: unknown key (did you mean 'momentum'?)", "seeds.count: found 0",
      "unknown method 'lss' (did you mean 'ls'?)", "resources.cpus_per_trail: unknown key (did you mean "
      "'cpus_per_trial'?)"], []),
    ("cpus beyond this machine", GOOD + "resources: {cpus_per_trial: 4096}\n",
     ["resources: a trial asks for 4096 CPU, 0 GPU, but this machine has"], []),
    ("workers x cpus beyond this machine", GOOD + "resources: {cpus_per_trial: 2048, workers_per_trial: 2}\n",
     ["resources: a trial asks for 2 workers x 2048 CPU, 0 GPU = 4096 CPU, 0 GPU (the trial's own driver "
      "reserves no CPU or GPU), but this machine has"], []),
    ("schema_version 1.0", replace("schema_version: 1", "schema_version: 1.0"),
     [":1: schema_version: found 1.0; allowed: a whole number"], []),
    ("schema_version true", replace("schema_version: 1", "schema_version: true"), ["schema_version: found True"], []),
    ("a 300-character name", replace("name: t", "name: " + "n" * 300),
     ["name: found a name of 300 characters; allowed: at most 100 characters"], []),
    ("a name that is a path", replace("name: t", "name: a/b"), ["name: found 'a/b'"], []),
    ("seeds key typo", replace("seeds: [0, 1]", "seeds: {count: 3, strat: 1}"),
     ["seeds.strat: unknown key (did you mean 'start'?)"], []),
    ("protocol typo", replace("epochs: 1", "epochs: 1, protocol: clear"),
     ["train.protocol: found 'clear' (did you mean 'clean'?); allowed: clean, paper"], []),
    ("holdout above one", replace("epochs: 1", "epochs: 1, holdout: 1.5"),
     ["train.holdout: found 1.5; allowed: a fraction in (0, 1) or a whole number of images >= 1"], []),
    ("holdout zero", replace("epochs: 1", "epochs: 1, holdout: 0"), ["train.holdout: found 0"], []),
    ("holdout_seed negative", replace("epochs: 1", "epochs: 1, holdout_seed: -1"),
     ["train.holdout_seed: found -1; allowed: >= 0"], []),
    ("dataset param type", replace("datasets: [digits]", "datasets: [{name: digits, params: {val_fraction: high}}]"),
     ["datasets[0].params.val_fraction: dataset 'digits': found 'high'; allowed: a number"], []),
    ("dataset param typo", replace("datasets: [digits]", "datasets: [{name: digits, params: {vall_fraction: 0.1}}]"),
     ["unknown key (did you mean 'val_fraction'?)"], []),
    ("method choice typo", replace("alpha: [0.5, 1.0]", "upsample: bilnear"),
     ["methods[1].params.upsample: 'upsample' of 'zipf': found 'bilnear' (did you mean 'bilinear'?)"], []),
    ("entry key typo", replace("{name: zipf, params: {alpha: [0.5, 1.0]}}", "{name: zipf, parms: {alpha: 1.0}}"),
     ["methods[1].parms: unknown key (did you mean 'params'?)"], []),
    ("one bad value in an axis", replace("alpha: [0.5, 1.0]", "alpha: [0.5, .nan, 1.0]"),
     ["methods[1].params.alpha[1]: 'alpha' of 'zipf': found nan; allowed: a finite number"], []),
    ("missing import and the method it would register", replace("[ce,", "[my_method,") + "imports: [missing.py]\n",
     ["imports[0]: 'missing.py': no such file", "methods[0].name: unknown method 'my_method'"], []),
    ("milestones mixing fractions and epochs", replace("epochs: 1", "epochs: 1, milestones: [0.5, 100]"),
     ["train.milestones: found [0.5, 100]"], []),
    ("device", replace("epochs: 1", "epochs: 1, device: gpu"), ["train.device: found 'gpu'"], []),
    ("retries", GOOD + "retries: 1000\n", ["retries: found 1000; allowed: <= 100"], []),
    ("a duplicated key", GOOD + "seeds: [3]\n", ["key 'seeds' appears twice"], []),
    ("too large a file", GOOD + "# " + "x" * (1024 * 1024) + "\n", ["allowed: at most 1,048,576 bytes"], []),
    ("not UTF-8", b"schema_version: 1\nname: \xff\xfe\n", ["not a text file"], []),
    ("nested too deeply", GOOD + "description: " + "[" * 5000 + "\n", ["nested too deeply"], []),
    # entries are typed on the sweep file: a malformed entry is reported once (not once per member of
    # `name | {name, params}`) and the entries beside it are still checked (their names, their params)
    ("a malformed entry beside an unknown name and a bad param",
     replace("[ce, {name: zipf, params: {alpha: [0.5, 1.0]}}]", "[{nam: ce}, cee, {name: zipf, params: {alpa: 1.0}}, 7]"),
     ["methods[0].nam: unknown key (did you mean 'name'?)", "methods[0].name: missing", "methods[1].name: unknown method 'cee'",
      "methods[2].params.alpa: unknown parameter 'alpa'", "methods[3]: found 7"], []),
    ("sequential seeds: a key typo and max below start",
     replace("seeds: [0, 1]", "seeds: {sequential: {start: 4, max: 3, stp: 1}}"),
     ["seeds.sequential.stp: unknown key (did you mean 'step'?)"], []),
    ("seeds of the wrong kind", replace("seeds: [0, 1]", "seeds: abc"),
     ["seeds: found 'abc'; allowed: a list of distinct whole numbers >= 0, {count: N, start: S} or {sequential:"], []),
    ("seeds: one bad value in a list", replace("seeds: [0, 1]", "seeds: [0, x, 2]"), ["seeds[1]: found 'x'"], []),
    ("search: a structural problem", replace("seeds: [0, 1]", "seeds: [0, 1]\nsearch: {budget: 0, schedulr: asha}"),
     ["search.budget: found 0", "search.schedulr: unknown key (did you mean 'scheduler'?)"], []),
    ("--set train typo and value", GOOD, ["--set train.lr: found 'fast'", "--set train.epoch: unknown key"],
     ["--set", "train.lr=fast", "--set", "train.epoch=3"]),
    ("--set model key the harness owns", GOOD, ["--set model.num_classes: set by the harness"],
     ["--set", "model.num_classes=3"]),
    ("--set method param nobody has", GOOD, ["--set method.gamma: no method of this sweep has a parameter 'gamma'"],
     ["--set", "method.gamma=2"]),
]


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """The 2 s bound is for the checks, not for importing torch, timm and ray the first time."""
    import ray  # noqa: F401
    import timm

    import harness.data  # noqa: F401
    import harness.models  # noqa: F401
    import harness.sweep.runner  # noqa: F401
    from harness.cli import build_parser

    timm.list_models()
    build_parser()  # imports every command's module


@pytest.mark.parametrize("text, expected, args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_sweep_is_refused_with_one_line_per_problem(text, expected, args, tmp_path, capsys):
    import ray

    path = write_sweep_file(tmp_path, text)
    results = tmp_path / "results"
    start = time.perf_counter()
    code = main(["run", str(path), "--results", str(results), *args])
    elapsed = time.perf_counter() - start
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2, out.err
    assert "Traceback" not in out.err
    assert len(lines) == len(expected), out.err  # one line per problem: nothing missing, nothing repeated
    assert lines[0].startswith(f"tfbench: error: {path}")
    assert all(line.startswith(str(path)) for line in lines[1:]), out.err
    for text_ in expected:
        assert out.err.count(text_) == 1, (text_, out.err)
    assert not results.exists() and not ray.is_initialized()
    assert elapsed < 2.0, f"{elapsed:.2f} s"


def test_gpus_on_a_machine_without_one_are_refused_before_anything(tmp_path, capsys, monkeypatch):
    import ray
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    path = tmp_path / "s.yaml"
    path.write_text(GOOD + "resources: {gpus_per_trial: 1}\n")
    code = main(["run", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{path}:8: resources.gpus_per_trial: found 1, but this machine has no visible GPU" in err
    assert not (tmp_path / "results").exists() and not ray.is_initialized()


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_the_alias_bomb_is_refused_well_within_a_second(tmp_path):
    from harness.config.problems import SweepError, read_yaml

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9))
    start = time.perf_counter()
    with pytest.raises(SweepError):
        read_yaml(path)
    assert time.perf_counter() - start < 1.0


def test_a_modest_alias_is_still_fine(tmp_path):
    from harness.config.sweep_file import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("train: {epochs: 1}", "train: &t {epochs: 1}")
                    + "dataset_defaults: {digits: {train: *t}}\n")
    assert len(load_sweep(path).trials) == 6


def test_line_numbers_point_at_the_problem(tmp_path):
    from harness.config.problems import SweepError
    from harness.config.sweep_file import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("train: {epochs: 1}", "train:\n  epochs: 1\n  lr: fast"))
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    assert e.value.problems == [f"{path}:9: train.lr: found 'fast'; allowed: a number"]
