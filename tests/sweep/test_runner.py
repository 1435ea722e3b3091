"""The Ray Tune runner end to end on CPU: a small sweep, skip-finished, resume, fault isolation, retries,
a user method through `imports:`, a 2-worker data-parallel trial (gloo), and refusals before any work."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import read_csv, read_metrics, write_sweep_file

from harness.cli import main
from harness.config.sweep_file import load_sweep
from harness.folders import ResultsLock
from harness.sweep.runner import run_sweep
from harness.train.loop import train_trial

pytestmark = pytest.mark.slow

METHODS_FILE = '''
import os
from dataclasses import dataclass
import torch.nn.functional as F
from methods import Method, register


@register("half_ce_test")
class HalfCE(Method):
    @dataclass(frozen=True)
    class Params:
        weight: float = 0.5

    def loss(self, logits, targets, ctx):
        ce = F.cross_entropy(logits, targets)
        return {"loss": self.params.weight * ce, "ce": ce}


@register("broken_test")
class Broken(Method):
    def loss(self, logits, targets, ctx):
        with open(os.environ["TFBENCH_TEST_ATTEMPTS"], "a") as f:
            f.write("x")
        raise RuntimeError("this method always fails")
'''


@pytest.fixture(autouse=True)
def forget_test_methods():
    """Each test imports its own copy of the methods file; the registry must not see the last test's."""
    from methods import METHODS

    yield
    for name in ("half_ce_test", "broken_test"):
        METHODS.unregister(name)


def sweep_file(tmp_path: Path, methods: str, extra: str = "") -> Path:
    text = f"""\
schema_version: 1
name: e2e
imports: [my_methods.py]
methods: {methods}
datasets: [digits]
models: [tiny_cnn]
seeds: [0]
train: {{epochs: 2, batch_size: 64, max_steps_per_epoch: 3}}
resources: {{cpus_per_trial: 1, max_concurrent: 2}}
retries: 1
{extra}"""
    return write_sweep_file(tmp_path, text, name="e2e.yaml", beside={"my_methods.py": METHODS_FILE})


def rows(folder: Path) -> dict[str, dict]:
    return {r["method"]: r for r in read_csv(folder / "trials.csv")}


def test_sweep_end_to_end_skip_finished_resume_and_fault_isolation(tmp_path, monkeypatch):
    attempts = tmp_path / "attempts"
    monkeypatch.setenv("TFBENCH_TEST_ATTEMPTS", str(attempts))
    path = sweep_file(tmp_path, "[half_ce_test, zipf, broken_test]")
    sweep = load_sweep(path)
    results = tmp_path / "results"
    folder = results / "e2e"
    # an interrupted zipf trial: its checkpoint holds epoch 1 of 2
    zipf = [t for t in sweep.trials if t.method == "zipf"][0]

    def die(m):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_trial(zipf, folder / "trials" / zipf.key(), report=die, log=lambda s: None)

    assert run_sweep(sweep, results, progress=False) == 1  # one trial failed
    table = rows(folder)
    assert set(table) == {"half_ce_test", "zipf", "broken_test"}
    assert table["half_ce_test"]["status"] == "finished" and table["zipf"]["status"] == "finished"
    assert table["broken_test"]["status"] == "failed"
    assert "this method always fails" in table["broken_test"]["error"]
    assert attempts.read_text() == "xx"  # the first attempt plus one retry
    assert "resuming" in (folder / "trials" / zipf.key() / "train.log").read_text()
    epochs = [r["epoch"] for r in read_metrics(folder / "trials" / zipf.key())]
    assert epochs == [1, 2]
    assert (folder / "summary.md").exists() and (folder / "sweep.yaml").exists()

    # a rerun trains only what is missing: finished results are left untouched
    done = folder / "trials" / table["half_ce_test"]["key"] / "result.json"
    stamp = done.stat().st_mtime_ns
    assert run_sweep(sweep, results, progress=False) == 1
    assert done.stat().st_mtime_ns == stamp
    assert attempts.read_text() == "xxxx"  # failed trials are tried again
    assert len(rows(folder)) == 3


def test_data_parallel_trial_with_two_gloo_workers(tmp_path):
    path = sweep_file(tmp_path, "[pskd]", "")
    text = path.read_text().replace("resources: {cpus_per_trial: 1, max_concurrent: 2}",
                                    "resources: {cpus_per_trial: 0.5, workers_per_trial: 2}")
    path.write_text(text)
    sweep = load_sweep(path)
    assert sweep.trials[0].train.workers == 2
    assert run_sweep(sweep, tmp_path / "results", progress=False) == 0
    result = json.loads((tmp_path / "results" / "e2e" / "trials" / sweep.trials[0].key() / "result.json").read_text())
    assert result["world_size"] == 2 and result["status"] == "finished"


def test_asking_for_gpus_without_gpus_fails_at_once(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    path = sweep_file(tmp_path, "[half_ce_test]")
    path.write_text(path.read_text().replace("max_concurrent: 2", "gpus_per_trial: 0.5"))
    code = main(["run", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "no visible GPU" in err and len(err.strip().splitlines()) == 1


def test_a_second_run_on_the_same_results_folder_is_refused(tmp_path, capsys):
    path = sweep_file(tmp_path, "[half_ce_test]")
    folder = tmp_path / "results" / "e2e"
    folder.mkdir(parents=True)
    with ResultsLock(folder):
        code = main(["run", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and f"another tfbench run (pid {os.getpid()})" in err


def test_an_unwritable_results_folder_fails_before_training(tmp_path, capsys):
    if os.geteuid() == 0:
        # root ignores permission bits; a file where the folder should be is unwritable for everyone
        (tmp_path / "results").write_text("not a folder")
    else:
        (tmp_path / "results").mkdir(mode=0o500)
    path = sweep_file(tmp_path, "[half_ce_test]")
    code = main(["run", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write results" in err
