"""Ray clusters without surprises (harness/sweep/cluster.py): a trial's placement and whether it fits,
worked by hand; then, on a 2-CPU Ray head this file starts on loopback, a 2-worker x 1-CPU data-parallel
trial that finishes, an impossible placement refused at once, a wrong address failing fast, and a local
sweep whose Ray ports listen on loopback only."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import write_sweep_file

from harness.cli import main
from harness.config.sweep_file import load_sweep
from harness.errors import UserError
from harness.sweep import cluster
from harness.sweep.runner import run_sweep

RAY = str(Path(sys.executable).with_name("ray"))


# --- placement, by hand --------------------------------------------------------------------------------

def test_placement_of_a_data_parallel_trial_reserves_no_cpu_for_its_driver():
    p = cluster.trial_placement(cpus=1, gpus=0, workers=2)
    assert p.total("CPU") == 2 and p.total("GPU") == 0
    assert p.driver == {"memory": float(cluster.DRIVER_MEMORY)}
    assert cluster.tune_resources(p) == {"CPU": 0, "GPU": 0, "memory": float(cluster.DRIVER_MEMORY)}
    # 4 workers x 8 CPUs x 1 GPU (the shipped ImageNet file) on one 32-CPU, 4-GPU node: exactly one trial
    big = cluster.trial_placement(cpus=8, gpus=1, workers=4)
    assert big.total("CPU") == 32 and big.total("GPU") == 4
    assert cluster.placement_problem(big, [{"CPU": 32, "GPU": 4}], "x") is None
    assert cluster.concurrent_trials(big, [{"CPU": 32, "GPU": 4}]) == 1
    # the GPU count is multiplied by the workers: 3 GPUs are not enough
    line = cluster.placement_problem(big, [{"CPU": 64, "GPU": 3}], "the Ray cluster")
    assert line is not None and "4 GPU" in line and "3 GPU in all" in line and "\n" not in line


def test_each_bundle_needs_one_node_but_a_trial_may_span_nodes():
    two_workers = cluster.trial_placement(cpus=2, gpus=0, workers=2)
    # two 2-CPU nodes hold one worker each
    assert cluster.placement_problem(two_workers, [{"CPU": 2}, {"CPU": 2}], "x") is None
    # four CPUs in all, but no node holds a 3-CPU worker
    three = cluster.trial_placement(cpus=3, gpus=0, workers=1)
    line = cluster.placement_problem(three, [{"CPU": 2}, {"CPU": 2}], "the Ray cluster")
    assert line is not None and "4 CPU, 0 GPU in all (largest node: 2 CPU, 0 GPU)" in line
    # 1.5-CPU trials on 2 + 2 CPUs: one per node, so 2 at once (not floor(4 / 1.5) = 2.67 -> 2 by luck:
    # on 3 + 1 CPUs only 2 fit, by the same count, and on 1 + 1 none)
    one_and_half = cluster.trial_placement(cpus=1.5, gpus=0, workers=1)
    assert cluster.concurrent_trials(one_and_half, [{"CPU": 2}, {"CPU": 2}]) == 2
    assert cluster.concurrent_trials(one_and_half, [{"CPU": 3}, {"CPU": 1}]) == 2
    assert cluster.concurrent_trials(one_and_half, [{"CPU": 1}, {"CPU": 1}]) == 0


def test_unschedulable_means_never_fits_or_pending_on_an_idle_cluster():
    nodes = [{"CPU": 2.0, "GPU": 0.0}]
    total = {"CPU": 2.0, "GPU": 0.0}
    # does not fit the nodes at all
    assert cluster.unschedulable([{"CPU": 1}] * 3, nodes, total, total)
    # fits, the cluster is busy (1 CPU taken by other work): waiting is right
    assert not cluster.unschedulable([{"CPU": 1}] * 2, nodes, total, {"CPU": 1.0, "GPU": 0.0})
    # fits, the cluster is idle, and it is still pending: nothing will change
    assert cluster.unschedulable([{"CPU": 1}] * 2, nodes, total, total)


def test_the_watchdog_fails_a_placement_pending_a_minute_on_an_idle_cluster_only(monkeypatch):
    import ray
    import ray.util

    table = {"pg1": {"state": "PENDING", "bundles": {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}},
             "pg0": {"state": "CREATED", "bundles": {0: {"memory": 1.0}}}}
    available = {"CPU": 1.0, "GPU": 0.0}  # another job holds one CPU
    monkeypatch.setattr(ray.util, "placement_group_table", lambda: table)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 0.0})
    monkeypatch.setattr(ray, "available_resources", lambda: dict(available))
    monkeypatch.setattr(cluster, "ray_nodes", lambda: [{"CPU": 2.0, "GPU": 0.0}])
    dog = cluster.PendingWatchdog(cluster.trial_placement(cpus=1, gpus=0, workers=2), limit_s=60, every_s=0)
    dog.poll(now=1000.0)
    dog.poll(now=1061.0)  # a minute pending, but the cluster is busy: waiting is right
    available["CPU"] = 2.0  # the other job is gone, and pg1 is still pending: it never will be placed
    table["pg2"] = {"state": "PENDING", "bundles": {0: {"CPU": 1.0}}}
    with pytest.raises(UserError, match="could not be placed for 62 s while the Ray cluster had no other work"):
        dog.poll(now=1062.0)
    del table["pg1"]
    dog.poll(now=1063.0)  # pg2 is pending for 1 s only: not yet


def test_fit_gives_back_the_watchdogs_line_from_inside_tunes_errors():
    class Tuner:
        def fit(self):
            try:
                raise UserError("resources: the line")
            except UserError as e:
                raise RuntimeError("Tune run failed") from e

    with pytest.raises(UserError, match="^resources: the line$"):
        cluster.fit(Tuner())


def test_auth_environment_respects_the_user_and_sends_a_token_when_there_is_one(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    cluster.auth_environment(attach=True)  # no token anywhere: nothing to send
    assert "RAY_AUTH_MODE" not in os.environ
    (tmp_path / "none").write_text("secret")
    cluster.auth_environment(attach=True)
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cluster.auth_environment(attach=False)
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def write_sweep(tmp_path: Path, resources: str, name: str = "dp") -> Path:
    return write_sweep_file(tmp_path, f"""\
schema_version: 1
name: {name}
methods: [ce]
datasets: [digits]
models: [tiny_cnn]
seeds: [0]
train: {{epochs: 1, batch_size: 32, max_steps_per_epoch: 2}}
resources: {resources}
retries: 0
""", name=f"{name}.yaml")


def test_an_impossible_local_placement_is_refused_at_once_with_nothing_written(tmp_path, capsys):
    cpus = len(os.sched_getaffinity(0))
    path = write_sweep(tmp_path, f"{{cpus_per_trial: 1, workers_per_trial: {cpus + 1}}}")
    results = tmp_path / "results"
    load_sweep(path)  # the timer leaves out the one-off imports of loading a sweep file (torch, timm)
    start = time.time()
    code = main(["run", str(path), "--results", str(results)])
    took = time.time() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and took < 5, (code, took)
    assert len(err.splitlines()) == 1 and f"{cpus + 1} workers x 1 CPU" in err and "this machine" in err
    assert not results.exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends; nothing listens there


def test_a_wrong_address_fails_fast_with_one_line_and_nothing_written(tmp_path, capsys):
    path = write_sweep(tmp_path, "{cpus_per_trial: 1}")
    results = tmp_path / "results"
    load_sweep(path)  # as above: imports out of the timer
    start = time.time()
    code = main(["run", str(path), "--results", str(results), "--address", f"127.0.0.1:{closed_port()}"])
    took = time.time() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and took < 10, (code, took)
    assert len(err.splitlines()) == 1 and "cannot reach a Ray head" in err
    assert not results.exists()


# --- on a real (loopback, 2-CPU) Ray cluster -------------------------------------------------------------

def _psutil():
    """Ray's bundled psutil (importing ray puts it on sys.path; the venv has no psutil of its own)."""
    import importlib

    import ray  # noqa: F401

    return importlib.import_module("psutil")


def ray_processes(tag: str):
    """The processes of the Ray session under temp dir `tag` (their command lines name its session folder)."""
    psutil = _psutil()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(tag + "/session_" in a for a in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


def stop_ray_processes(tag: str) -> None:
    """Stop only this test's cluster (`ray stop` would stop every Ray on the machine)."""
    psutil = _psutil()

    procs = ray_processes(tag)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()


@pytest.fixture(scope="module")
def head():
    """A 2-CPU head on loopback, started the way docs/cluster.md says; its address."""
    temp = tempfile.mkdtemp(prefix="rtf", dir="/tmp")  # short: Ray's socket paths live under it
    port = closed_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token"}
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                        "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp}",
                        "--object-store-memory=100000000"], env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        stop_ray_processes(temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def attached(head, monkeypatch):
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    yield head
    ray.shutdown()


@pytest.mark.slow
def test_a_2_worker_x_1_cpu_data_parallel_trial_finishes_on_a_2_cpu_cluster(tmp_path, attached):
    import ray

    path = write_sweep(tmp_path, "{cpus_per_trial: 1, workers_per_trial: 2}")
    sweep = load_sweep(path)
    results = tmp_path / "results"
    assert run_sweep(sweep, results, address=attached, progress=False) == 0
    tdir = results / "dp" / "trials" / sweep.trials[0].key()
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "finished" and result["world_size"] == 2
    # the start-up, in its parts: Ray Train's workers, their imports, the wait for the shared data, the set-up
    parts = result["workers_s"] + result["imports_s"] + result["data_wait_s"] + result["setup_s"]
    assert result["startup_s"] > 0 and abs(parts - result["startup_s"]) < 0.05
    # the cluster keeps running, without the detached actor Ray Train created for the sweep
    assert ray.cluster_resources().get("CPU") == 2
    with pytest.raises(ValueError):
        ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator")


@pytest.mark.slow
def test_an_impossible_placement_on_a_cluster_is_refused_at_once(tmp_path, attached):
    path = write_sweep(tmp_path, "{cpus_per_trial: 1, workers_per_trial: 3}")
    results = tmp_path / "results"
    start = time.time()
    with pytest.raises(UserError) as e:
        run_sweep(load_sweep(path), results, address=attached, progress=False)
    assert time.time() - start < 5
    assert "3 workers x 1 CPU" in str(e.value) and "2 CPU, 0 GPU in all" in str(e.value)
    assert not results.exists()


@pytest.mark.slow
def test_a_local_sweep_listens_on_loopback_only(tmp_path):
    """Runs a local sweep in a child process; while it trains (a test pause hook), every listening socket
    of that process and its children is on 127.0.0.1."""
    psutil = _psutil()

    path = write_sweep(tmp_path, "{cpus_per_trial: 1}", name="local")
    marker = tmp_path / "pause"
    env = {**os.environ, "TFBENCH_TEST_PAUSE_BEFORE_SUMMARY": str(marker), "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    child = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(path), "--results",
                              str(tmp_path / "results"), "--no-progress"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # sample the listening sockets while Ray runs: from its start until the sweep pauses before its
        # summary (Ray is shut down by then)
        deadline = time.time() + 240
        seen: list[tuple[str, str]] = []
        while time.time() < deadline and child.poll() is None:
            family = [child.pid] + [c.pid for c in psutil.Process(child.pid).children(recursive=True)]
            for c in psutil.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN and c.pid in family:
                    seen.append((psutil.Process(c.pid).name(), c.laddr.ip))
            if marker.exists():
                break
            time.sleep(0.5)
        assert seen, "no Ray port was seen listening"
        outside = [(n, ip) for n, ip in seen if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
        assert not outside, outside
    finally:
        marker.unlink(missing_ok=True)
        try:
            child.wait(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
