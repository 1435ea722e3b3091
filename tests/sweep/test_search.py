"""Tune, then confirm: the search section's validation, the seeded search space, selection on
the validation split only, ASHA's early stops recorded as `stopped`, resume without retraining, confirm
trials with every seed, the summary's search section, and the TensorBoard event files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import event_scalars, read_csv, read_metrics, write_sweep_file

from harness.config.problems import SweepError
from harness.config.sweep_file import load_sweep
from harness.folders import ResultsFolder
from harness.sweep.search import sample_configs, select_best

# A test method whose one parameter scales the loss (a small scale is a small learning rate: clearly worse
# after an epoch, so ASHA has something to stop), and digits with every test label moved to the next class:
# a model that is better on the validation split is worse on this test split, so the two splits would
# choose different configurations.
USER_FILE = '''
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.data.embedded import Digits
from harness.data.registry import in_memory_bundle, register_dataset
from methods import Method, register


@register("scaled_ce_test")
class ScaledCE(Method):
    @dataclass(frozen=True)
    class Params:
        scale: float = 1.0

    def loss(self, logits, targets, ctx):
        return {"loss": self.params.scale * F.cross_entropy(logits, targets)}


@register_dataset("digits_shifted_test")
class ShiftedTest(Digits):
    def build(self, p, root):
        b = super().build(p, root)
        m = b.memory
        return in_memory_bundle(name="digits_shifted_test", classes=b.classes, train_x=m.train_x,
                                train_y=m.train_y, val_x=m.val_x, val_y=(m.val_y + 1) % 10, mean=b.mean,
                                std=b.std, crop_padding=0, flip=False, root=None)
'''


def write_sweep(tmp_path: Path, *, budget: int = 4, search: str | None = None, methods: str = "[ls, scaled_ce_test]",
                epochs: int = 3, protocol: str = "clean") -> Path:
    search = search or f"""\
search:
  budget: {budget}
  seed: 3
  scheduler: {{name: asha, grace_period: 1, reduction_factor: 2}}
  space:
    ls: {{epsilon: {{uniform: [0.0, 0.5]}}}}
    scaled_ce_test: {{scale: {{loguniform: [0.0001, 1.0]}}}}
"""
    return write_sweep_file(tmp_path, f"""\
schema_version: 1
name: tune-test
imports: [user_parts.py]
methods: {methods}
datasets: [digits_shifted_test]
models: [tiny_cnn]
seeds: [0, 1]
train: {{epochs: {epochs}, batch_size: 32, lr: 0.1, max_steps_per_epoch: 8, holdout: 0.2, protocol: {protocol}}}
resources: {{cpus_per_trial: 1, max_concurrent: 1}}
retries: 0
{search}""", name="tune.yaml", beside={"user_parts.py": USER_FILE})


@pytest.fixture(autouse=True)
def forget_test_parts():
    yield
    from harness.data import DATASETS
    from methods import METHODS

    for registry, name in ((METHODS, "scaled_ce_test"), (DATASETS, "digits_shifted_test")):
        if name in registry:
            registry.unregister(name)


# --- the search space and selection (pure) -------------------------------------------------------

def test_random_search_is_seeded_distinct_in_range_and_a_larger_budget_extends_a_smaller_one():
    space = {"a": ("uniform", (0.0, 0.5)), "b": ("loguniform", (1e-4, 1.0)), "c": ("choice", (1, 2, 3))}
    four = sample_configs(space, 4, seed=7)
    assert four == sample_configs(space, 4, seed=7)       # a rerun proposes the same configurations
    assert four != sample_configs(space, 4, seed=8)
    assert sample_configs(space, 2, seed=7) == four[:2]   # a grown budget keeps what was trained
    assert len({json.dumps(c, sort_keys=True) for c in four}) == 4
    for c in four:
        assert 0.0 <= c["a"] <= 0.5 and 1e-4 <= c["b"] <= 1.0 and c["c"] in (1, 2, 3)
    # log-uniform: the median of many draws is near the geometric middle (1e-2), not the arithmetic (0.5)
    many = sample_configs({"b": ("loguniform", (1e-4, 1.0))}, 400, seed=0)
    assert 10 ** -2.5 < float(np.median([c["b"] for c in many])) < 10 ** -1.5
    # choices only: as many configurations as the space has points; nothing to tune: one (the defaults)
    assert len(sample_configs({"c": ("choice", (1, 2, 3))}, 10, seed=0)) == 3
    assert sample_configs({}, 5, seed=0) == [{}]


def test_selection_reads_the_validation_number_only():
    rows = [{"key": "a", "status": "finished", "val": 0.80, "test": 0.99},
            {"key": "b", "status": "finished", "val": 0.90, "test": 0.10},
            {"key": "c", "status": "stopped", "val": 0.95, "test": 0.99},   # never trained to the end
            {"key": "d", "status": "failed", "val": None},
            {"key": "e", "status": "finished", "val": 0.90, "test": 0.50}]  # a tie, no NLL: the first one wins
    assert select_best(rows, "top1")["key"] == "b"
    assert select_best([{"key": "x", "status": "stopped", "val": 0.9}], "top1") is None
    # the tie-break of train.select: at equal validation top-1 the lower validation NLL wins
    rows[1]["val_nll"], rows[4]["val_nll"] = 0.40, 0.30
    assert select_best(rows, "top1")["key"] == "e"
    # under `nll` the NLL decides first, whatever the top-1
    rows[0]["val_nll"] = 0.10
    assert select_best(rows, "nll")["key"] == "a"


@pytest.mark.parametrize("search, expected", [
    ("search: {budget: 4, space: {ls: {epsilom: {uniform: [0, 1]}}}}",
     "search.space.ls.epsilom: unknown parameter 'epsilom' (did you mean 'epsilon'?) of method 'ls'"),
    ("search: {budget: 4, space: {zipf: {alpha: {uniform: [0, 1]}}}}",
     "search.space.zipf: method 'zipf' is not in this sweep's methods"),
    ("search: {budget: 4, space: {ls: {epsilon: {uniform: [0.5, 0.1]}}}}",
     "search.space.ls.epsilon.uniform: found [0.5, 0.1]; allowed: [low, high] with low < high"),
    ("search: {budget: 4, space: {ls: {epsilon: {loguniform: [0.0, 0.1]}}}}",
     "allowed: low > 0 (a log scale)"),
    ("search: {budget: 4, space: {ls: {epsilon: {uniform: [0.0, 0.1], choice: [0.1]}}}}",
     "allowed: exactly one of uniform, loguniform, choice"),
    ("search: {budget: 4, scheduler: {name: asha, grace_period: 5}}",
     "search.scheduler.grace_period: found 5; allowed: at most train.epochs (3)"),
    ("search: {budget: 0}", "search.budget"),
    ("search: {budget: 4, algorithm: tpe}", "search.algorithm: found 'tpe' but optuna is not installed"),
])
def test_a_bad_search_section_is_one_line_naming_where_and_what_is_allowed(tmp_path, search, expected):
    if "tpe" in search:
        try:
            import optuna  # noqa: F401
            pytest.skip("optuna is installed: tpe is allowed")
        except ImportError:
            pass
    path = write_sweep(tmp_path, search=search, methods="[ce, ls]")
    with pytest.raises(SweepError) as e:
        load_sweep(path)
    assert expected in str(e.value)
    assert all(line.startswith(str(path)) for line in str(e.value).splitlines())


def test_a_searched_sweep_under_the_paper_protocol_is_refused(tmp_path):
    path = write_sweep(tmp_path, search="search: {budget: 2}", methods="[ce, ls]", protocol="paper")
    with pytest.raises(SweepError, match="train.protocol: found 'paper' in a sweep with search:; allowed: clean"):
        load_sweep(path)


def test_a_grid_axis_is_refused_in_a_searched_sweep(tmp_path):
    path = write_sweep(tmp_path, search="search: {budget: 2}", methods="[{name: ls, params: {epsilon: [0.1, 0.2]}}]")
    with pytest.raises(SweepError, match="'ls' gives 'epsilon' as a grid"):
        load_sweep(path)


# --- end to end ----------------------------------------------------------------------------------

def epoch_lines(tdir: Path) -> int:
    return sum(" epoch " in f" {line}" and "/" in line for line in (tdir / "train.log").read_text().splitlines())


def killed_after_first_method(path: Path, results: Path, tmp_path: Path,
                              hook: str = "TFBENCH_TEST_PAUSE_AFTER_SEARCH_GROUP") -> None:
    """Run `tfbench run` in its own session, wait at the test hook (by default: after the first method's
    search), kill the whole process group with SIGKILL, and wait until every process it started (marked
    through the environment, which Ray passes on) has gone."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    run_id = uuid.uuid4().hex
    pause = tmp_path / "paused"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"PYTHONUNBUFFERED": "1", "TFBENCH_TEST_RUN": run_id, hook: str(pause)})
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(results),
                             "--no-progress"], cwd=Path(__file__).resolve().parents[2], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not pause.exists():
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.time() < deadline, f"timed out waiting for {hook}"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()
    needle = f"TFBENCH_TEST_RUN={run_id}".encode()
    deadline = time.time() + 60
    while True:
        left = []
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and needle in (d / "environ").read_bytes().split(b"\0") and \
                        (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    left.append(int(d.name))
            except (OSError, IndexError):
                pass
        if not left or time.time() > deadline:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    assert not left, f"processes of the killed run still alive: {left}"


@pytest.mark.slow
def test_search_then_confirm_end_to_end_with_resume_and_live_curves(tmp_path):
    from harness.sweep.runner import run_sweep

    results = tmp_path / "results"
    folder = results / "tune-test"

    # 1. `tfbench run` killed (SIGKILL to its process group, Ray included) once the first method's search
    #    is done, while the second method's has not started
    path = write_sweep(tmp_path, budget=4)
    killed_after_first_method(path, results, tmp_path)
    first = sorted(p.name for p in (folder / "trials").iterdir() if (p / "metrics.jsonl").exists())
    assert len(first) == 4 and all(k.startswith("ls-") for k in first)
    assert not (folder / "search.json").exists()
    before = {k: (epoch_lines(folder / "trials" / k), (folder / "trials" / k / "metrics.jsonl").stat().st_mtime_ns)
              for k in first}
    assert all(lines > 0 for lines, _ in before.values())

    # 2. the same command resumes: the first method's trials are not retrained
    assert run_sweep(load_sweep(path), results, progress=False) == 0
    rows = read_csv(folder / "search.csv")
    assert len(rows) == 8 and set(first) < {r["key"] for r in rows}
    for k, (lines, mtime) in before.items():
        assert epoch_lines(folder / "trials" / k) == lines, f"{k} was trained again"
        assert (folder / "trials" / k / "metrics.jsonl").stat().st_mtime_ns == mtime

    # ASHA stopped at least one trial early; it is `stopped`, not failed, and trained fewer epochs
    stopped = [r for r in rows if r["status"] == "stopped"]
    assert stopped, f"ASHA stopped nothing: {[(r['key'], r['status'], r['val_top1']) for r in rows]}"
    assert all(int(r["epochs_trained"]) < 3 for r in stopped)
    assert all(r["status"] in ("finished", "stopped") for r in rows)
    for r in stopped:
        assert json.loads((folder / "trials" / r["key"] / "stopped.json").read_text())["status"] == "stopped"

    # selection: per method, the finished trial with the best validation top-1; the test split (labels
    # shifted by one class) would have chosen another one
    record = json.loads((folder / "search.json").read_text())
    decided_differently = 0
    for g in record["groups"]:
        finished = [r for r in g["rows"] if r["status"] == "finished"]
        by_val = max(finished, key=lambda r: r["val"])["key"]
        test = {r["key"]: json.loads((folder / "trials" / r["key"] / "result.json").read_text())["selected_top1"]
                for r in finished}
        assert g["best"] == by_val
        decided_differently += max(test, key=test.get) != by_val and len(finished) > 1
        # confirm: the selected configuration with both seeds of the sweep
        assert len(g["confirm"]) == 2
        specs = [json.loads((folder / "trials" / k / "config.json").read_text())["spec"] for k in g["confirm"]]
        assert sorted(s["seed"] for s in specs) == [0, 1]
        assert all(s["method_params"] == specs[0]["method_params"] for s in specs)
        for p, v in g["best_params"].items():
            assert specs[0]["method_params"][p] == v
    assert decided_differently >= 1

    # the comparison is built from the confirm trials only; the summary states the budget per method
    confirm = read_csv(folder / "trials.csv")
    assert sorted(r["key"] for r in confirm) == sorted(k for g in record["groups"] for k in g["confirm"])
    assert all(r["status"] == "finished" for r in confirm)
    summary = (folder / "summary.md").read_text()
    assert "Search trials per method: LS 4, scaled_ce_test 4" in summary
    assert "## Search budget" in summary and "## Search trials" in summary
    assert "stopped" in summary.split("## Search trials")[1]

    # live curves: every trial's TensorBoard files parse and hold its per-epoch validation top-1
    key = record["groups"][0]["confirm"][1]
    scalars: dict[str, dict[int, float]] = {}
    for tag, step, value in event_scalars(folder / "trials" / key / "tb"):
        scalars.setdefault(tag, {})[step] = value
    metrics = read_metrics(folder / "trials" / key)
    assert sorted(scalars["val/top1"]) == [1, 2, 3]
    for m in metrics:
        assert scalars["val/top1"][m["epoch"]] == pytest.approx(m["val_top1"], rel=1e-6)
        assert scalars["train/loss"][m["epoch"]] == pytest.approx(m["train_loss"], rel=1e-6)

    # 3. a rerun of the finished search + confirm trains nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (folder / "trials").glob("*/metrics.jsonl")}
    assert run_sweep(load_sweep(path), results, progress=False) == 0
    assert {p: p.stat().st_mtime_ns for p in (folder / "trials").glob("*/metrics.jsonl")} == mtimes


@pytest.mark.slow
def test_a_searched_sweep_with_sequential_seeds_confirms_as_the_design_decides_and_resumes(tmp_path):
    """`search:` with `seeds: {sequential: {start: 3, max: 4}}`: killed (SIGKILL) after the design's first
    round of confirm trials, then the same command: the search and the first round are not trained again,
    and the comparison's trials are exactly those the design's replay wants (its fixed point)."""
    import dataclasses

    from harness.config.spec import TrialSpec
    from harness.results.sequential import plan_of
    from harness.sweep.runner import run_sweep
    from harness.sweep.sequential import wanted

    results = tmp_path / "results"
    folder = results / "tune-test"
    path = write_sweep(tmp_path, methods="[ce, ls]", epochs=1, search="""\
search:
  budget: 2
  seed: 3
  scheduler: {name: fifo}
  space:
    ls: {epsilon: {uniform: [0.0, 0.5]}}
""")
    path.write_text(path.read_text().replace("seeds: [0, 1]", "seeds: {sequential: {start: 3, max: 4}}"))
    killed_after_first_method(path, results, tmp_path, hook="TFBENCH_TEST_PAUSE_AFTER_ROUND")
    record = json.loads((folder / "search.json").read_text())
    confirm = [k for g in record["groups"] for k in g["confirm"]]
    assert len(confirm) == 8  # 2 methods x seeds 0..3: the most the design may run
    first = {k: (folder / "trials" / k / "metrics.jsonl").stat().st_mtime_ns for k in confirm
             if (folder / "trials" / k / "result.json").exists()}
    seeds_of = {k: json.loads((folder / "trials" / k / "config.json").read_text())["spec"]["seed"] for k in first}
    assert sorted(seeds_of.values()) == [0, 0, 1, 1, 2, 2]  # round 1: the start seeds of CE and of LS

    assert run_sweep(load_sweep(path), results, progress=False) == 0
    for k, mtime in first.items():
        assert (folder / "trials" / k / "metrics.jsonl").stat().st_mtime_ns == mtime, f"{k} was trained again"
    sweep = load_sweep(path)
    specs = [TrialSpec.from_dict(d) for g in record["groups"] for d in g["confirm_specs"]]
    run = ResultsFolder(folder)
    want = wanted(dataclasses.replace(sweep, trials=specs), run, plan_of(sweep.raw["seeds"]), alpha=0.05,
                  rope=None, metric="selected_top1")
    rows = read_csv(folder / "trials.csv")
    assert sorted(r["key"] for r in rows) == sorted(t.key() for t in want)
    assert all(r["status"] == "finished" for r in rows)
    summary = (folder / "summary.md").read_text()
    ls = next(line for line in summary.splitlines() if line.startswith("| LS ") and "(look " in line)
    assert ("at 3 seeds (look 1 of 2)" in ls) == (len(rows) == 6)


def test_run_tensorboard_prints_the_command_that_shows_the_trials_curves(tmp_path, capsys):
    from harness.cli import main

    path = write_sweep(tmp_path, budget=2)
    assert main(["run", str(path), "--dry-run", "--tensorboard", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {(tmp_path / 'r' / 'tune-test' / 'trials').resolve()}" in out
    assert "each method tries up to 2 configurations" in out


def test_tpe_finds_its_earlier_trials_by_their_specs(tmp_path):
    """TPE's proposals are not known in advance: its trials on record are found by their stored specs."""
    import dataclasses

    from harness.config.resolve import resolve_trial
    from harness.io import atomic_write_json
    from harness.sweep.search import members, search_trial

    base = resolve_trial(method="ls", dataset="digits", model="tiny_cnn", seed=0, train={"epochs": 2})
    mine = search_trial(base, {"epsilon": 0.2})
    other_seed = dataclasses.replace(mine, seed=1)                       # a confirm trial, not a search trial
    other_method = resolve_trial(method="ce", dataset="digits", model="tiny_cnn", seed=0, train={"epochs": 2})
    for spec in (mine, other_seed, other_method):
        atomic_write_json(tmp_path / "trials" / spec.key() / "config.json", {"key": spec.key(), "spec": spec.to_dict()})
    found = members(ResultsFolder(tmp_path), base)
    assert [(s.key(), p) for s, p in found] == [(mine.key(), {"epsilon": 0.2})]
