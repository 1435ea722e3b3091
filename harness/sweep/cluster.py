"""The Ray cluster a sweep runs on: what a trial asks for, whether it fits, how to reach the cluster.

Why a module of its own: every surprise a sweep can meet on Ray (a trial that never gets placed, a wrong
address that retries for minutes, a head that wants a token, ports open to the network, actors left on
someone else's cluster) is decided here, before the runner writes anything or while it waits. Its ~410
lines stay one module because every part reads the same Placement, and the runner reaches it only through
single calls.

A trial's placement, as Ray sees it:
- one worker: one bundle {CPU: cpus_per_trial, GPU: gpus_per_trial}, the Tune trial itself;
- data-parallel (workers_per_trial > 1, Ray Train V2): the Tune trial only waits for its Train workers,
  so its bundle reserves DRIVER_MEMORY bytes of memory and no CPU or GPU; Train places the workers in a
  placement group of their own, `workers` bundles of {CPU, GPU}. Why memory: a Tune bundle must hold some
  resource, and any CPU fraction (Ray's default driver took 0.01) makes 2 workers x 1 CPU miss a 2-CPU
  cluster by that fraction, forever.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError

DRIVER_MEMORY = 1024**2  # bytes; see the module docstring
KINDS = ("CPU", "GPU")
ADDRESS_TIMEOUT_S = 3.0
PENDING_LIMIT_S = 60.0  # a placement pending this long on an idle cluster is reported as unschedulable
# (name, namespace) of the detached actors Ray Train V2 creates on first use and never removes
TFBENCH_DETACHED_ACTORS = (("AutoscalingCoordinator", "AutoscalingCoordinator"),)


@dataclass(frozen=True)
class Placement:
    """The whole placement of one trial: the Tune bundle and the Train workers' bundles (empty when the
    trial trains in the Tune bundle itself)."""
    driver: dict[str, float]
    workers: tuple[dict[str, float], ...]

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [self.driver, *self.workers]

    def total(self, kind: str) -> float:
        return sum(b.get(kind, 0.0) for b in self.bundles)

    def describe(self) -> str:
        if not self.workers:
            return _fmt(self.driver)
        return (f"{len(self.workers)} workers x {_fmt(self.workers[0])} = {self.total('CPU'):g} CPU, "
                f"{self.total('GPU'):g} GPU (the trial's own driver reserves no CPU or GPU)")


def trial_placement(*, cpus: float, gpus: float, workers: int) -> Placement:
    """Placement of one trial from the sweep file's `resources:` section."""
    per = {"CPU": float(cpus), "GPU": float(gpus)}
    if workers <= 1:
        return Placement(driver=per, workers=())
    return Placement(driver={"memory": float(DRIVER_MEMORY)}, workers=(per,) * workers)


def placement_of(resources: Any) -> Placement:
    return trial_placement(cpus=resources.cpus_per_trial, gpus=resources.gpus_per_trial,
                           workers=resources.workers_per_trial)


def max_concurrent(p: Placement, asked: int) -> int | None:
    """Tune's max_concurrent_trials: the sweep file's (0 = no limit), capped for data-parallel trials by
    how many fit the connected cluster at once (see concurrent_trials)."""
    if not p.workers:
        return asked or None
    fit = max(1, concurrent_trials(p, ray_nodes()))
    return min(asked, fit) if asked else fit


def tune_resources(p: Placement) -> dict[str, float]:
    """What `tune.with_resources` gets for the trial (zeros are dropped by Tune itself)."""
    if p.workers:
        return {"CPU": 0, "GPU": 0, "memory": p.driver["memory"]}
    return {"CPU": p.driver["CPU"], "GPU": p.driver["GPU"]}


# --- does it fit -----------------------------------------------------------------------------------

def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{res.get(k, 0.0):g} {k}" for k in KINDS)


def _fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items() if k in KINDS and v > 0)


def _place(bundles: list[dict[str, float]], free: list[dict[str, float]]) -> bool:
    """First-fit decreasing into `free` (mutated): Ray's PACK strategy may spread bundles over nodes, so
    the bundles of one trial need not share a node, but each bundle needs one node."""
    for b in sorted(bundles, key=lambda b: (b.get("GPU", 0.0), b.get("CPU", 0.0)), reverse=True):
        node = next((n for n in free if _fits(b, n)), None)
        if node is None:
            return False
        for k in KINDS:
            node[k] = node.get(k, 0.0) - b.get(k, 0.0)
    return True


def placement_problem(p: Placement, nodes: list[dict[str, float]], where: str) -> str | None:
    """None when one trial fits the nodes (each bundle on some node, all bundles at once), else the one
    line that says what the trial asks and what `where` has."""
    if _place(p.bundles, [dict(n) for n in nodes]):
        return None
    total = {k: sum(n.get(k, 0.0) for n in nodes) for k in KINDS}
    largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0))) if nodes else {}
    return (f"resources: a trial asks for {p.describe()}, but {where} has {_fmt(total)} in all "
            f"(largest node: {_fmt(largest)}); lower resources.cpus_per_trial, gpus_per_trial or "
            f"workers_per_trial, or use a bigger cluster (--address)")


def concurrent_trials(p: Placement, nodes: list[dict[str, float]], limit: int = 1000) -> int:
    """How many whole trials fit the nodes at once. Why the runner caps data-parallel sweeps by it: a
    Tune driver that reserves no CPU always starts, so without a cap every trial's driver would start and
    their Train worker groups would wait on each other."""
    free = [dict(n) for n in nodes]
    n = 0
    while n < limit and _place(p.bundles, free):
        n += 1
    return n


def local_nodes(gpus_needed: bool) -> list[dict[str, float]]:
    """This machine as the one node of the local cluster the runner starts (the same counts are passed to
    ray.init, so the check and Ray agree)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    gpus = 0
    if gpus_needed:  # importing torch costs seconds; a CPU sweep does not need to know
        import torch

        gpus = torch.cuda.device_count()
    return [{"CPU": float(cpus), "GPU": float(gpus)}]


def ray_nodes() -> list[dict[str, float]]:
    """The alive nodes of the connected cluster, by their total resources."""
    import ray

    return [{k: float(n["Resources"].get(k, 0.0)) for k in KINDS} for n in ray.nodes() if n.get("Alive")]


def check_local_placement(p: Placement, sweep: Any = None) -> None:
    """One trial against this machine; with the sweep, the line names the sweep file's line of `resources`."""
    from harness.config.problems import Problems

    problems = Problems(str(getattr(sweep, "source", "resources")), getattr(sweep, "lines", {}))
    nodes = local_nodes(p.total("GPU") > 0)
    if p.total("GPU") > 0 and nodes[0]["GPU"] == 0:
        problems.add(("resources", "gpus_per_trial"),
                     f"found {max(b.get('GPU', 0) for b in p.bundles):g}, but this machine has no visible GPU; "
                     f"allowed: 0 here, or attach to a cluster with GPUs (--address)")
    else:
        problem = placement_problem(p, nodes, "this machine")
        if problem:
            problems.add(("resources",), problem.removeprefix("resources: "))
    problems.raise_if_any()


def check_cluster_placement(p: Placement) -> None:
    problem = placement_problem(p, ray_nodes(), "the Ray cluster")
    if problem:
        raise UserError(problem)


# --- reaching the cluster --------------------------------------------------------------------------

def resolve_address(address: str | None) -> str | None:
    """--address, else $RAY_ADDRESS; None means a local cluster."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> str:
    """host:port of a reachable Ray head, or one UserError line within `timeout` seconds (Ray itself
    retries a wrong address for minutes)."""
    from ray._private.services import canonicalize_bootstrap_address, get_ray_address_from_environment

    try:  # "auto": the address of the last `ray start` on this machine, as it recorded it
        given = get_ray_address_from_environment(address, None) if address == "auto" else address
        if given is not None and is_loopback(given) and not _listens_beyond_loopback(given, timeout):
            # a head on loopback only (docs/cluster.md): this driver must stay on loopback too, or Ray
            # rewrites 127.0.0.1 to the machine's network address, where nothing listens
            loopback_environment()
        resolved = canonicalize_bootstrap_address(given) if given is not None else None
    except Exception as e:  # Ray raises ConnectionError or ValueError, with advice meant for its own CLI
        raise UserError(f"--address {address}: {str(e).splitlines()[0]}") from None
    if resolved is None:
        raise UserError(f"--address {address}: no running Ray cluster found on this machine; start one "
                        f"with `ray start --head`, or give its host:port")
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        raise UserError(f"--address {address}: cannot reach a Ray head at {resolved} ({why}); check the address "
                        f"and that `ray start --head` is running there (see docs/cluster.md)") from None
    return resolved


def _listens_beyond_loopback(address: str, timeout: float) -> bool:
    """Whether the head's port also answers on this machine's network address (a head started without
    loopback binding registers its nodes there, and a driver must then use that address)."""
    from ray._private.services import node_ip_address_from_perspective

    port = address.rpartition(":")[2]
    try:
        with socket.create_connection((node_ip_address_from_perspective(), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def token_available() -> bool:
    """A token for Ray's token authentication, where Ray looks for one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


def auth_environment(attach: bool) -> None:
    """Token authentication, as Ray documents it (RAY_AUTH_MODE, RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH /
    ~/.ray/auth_token). A user's RAY_AUTH_MODE always wins. A local cluster gets a token (Ray makes one if
    none exists). Attaching, a token that is present is sent: a head started by Ray >= 2.5x wants one, and
    without it the connection fails only after 20-35 s."""
    if "RAY_AUTH_MODE" not in os.environ and (not attach or token_available()):
        os.environ["RAY_AUTH_MODE"] = "token"
    if os.environ.get("RAY_AUTH_MODE") == "token":
        import sys

        if "ray" in sys.modules:  # Ray read its configuration when imported; make it read the mode again
            from ray._raylet import Config

            Config.initialize("")


def loopback_environment() -> None:
    """A local cluster binds every Ray port to 127.0.0.1. Ray does so only where it turns clusters off
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); `_node_ip_address="127.0.0.1"` alone is rewritten to the
    machine's network address. Set for the Ray processes this driver starts, and for the driver itself
    when Ray was imported before."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as rc

    rc.ENABLE_RAY_CLUSTER = False


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def connect(address: str) -> None:
    """Attach to a running cluster (already checked by check_address)."""
    import ray

    auth_environment(attach=True)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=True, logging_level="ERROR")
    except Exception as e:  # Ray's own message is many lines; its first line names the cause
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; if the head uses token authentication (Ray's default), set RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the head's token (docs/cluster.md)")
        raise UserError(f"--address {address}: cannot attach to the Ray cluster: {first[:300]}{hint}") from None


def start_local(gpus_needed: bool) -> None:
    """A private, loopback-only Ray with this machine's CPUs and GPUs and a token."""
    import ray

    loopback_environment()
    auth_environment(attach=False)
    node = local_nodes(gpus_needed)[0]
    # a capped object store: trials exchange only small metric dicts; GPUs as Ray finds them unless the
    # sweep wants some (then the count the placement check used)
    ray.init(num_cpus=int(node["CPU"]), num_gpus=int(node["GPU"]) if gpus_needed else None, include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True, object_store_memory=200 * 1024**2,
             configure_logging=True, logging_level="ERROR")


def preflight(resources: Any, address: str | None, sweep: Any = None) -> str | None:
    """Before the runner writes anything: a reachable cluster (attached here) on which one trial of
    `resources` (the sweep file's section) fits, or a machine that fits it. Returns the resolved address
    (None: a local cluster)."""
    p = placement_of(resources)
    address = resolve_address(address)
    if address is None:
        check_local_placement(p, sweep)
        return None
    resolved = check_address(address)
    connect(resolved)
    check_cluster_placement(p)
    print(describe_cluster(resolved, ray_nodes()), flush=True)
    return resolved


def describe_cluster(address: str, nodes: list[dict[str, float]]) -> str:
    """The one line that says which cluster a sweep attached to, and what it has."""
    return (f"attached to the Ray cluster at {address}: {len(nodes)} node(s), "
            f"{sum(n.get('CPU', 0.0) for n in nodes):g} CPU, {sum(n.get('GPU', 0.0) for n in nodes):g} GPU")


# --- after the sweep ---------------------------------------------------------------------------------

def leftover_candidates() -> set[tuple[str, str]]:
    """The detached actors of TFBENCH_DETACHED_ACTORS alive now; call before the sweep, so that only
    those the sweep created are removed after it (Ray Data of another job shares the same actor)."""
    import ray

    alive = set()
    for name, namespace in TFBENCH_DETACHED_ACTORS:
        try:
            ray.get_actor(name, namespace=namespace)
            alive.add((name, namespace))
        except ValueError:  # no such actor
            pass
    return alive


def remove_leftover_actors(before: set[tuple[str, str]]) -> list[str]:
    """Kill the detached actors Ray Train started for this sweep on a cluster tfbench did not start; the
    cluster itself keeps running. Returns the names removed."""
    import ray

    removed = []
    for name, namespace in set(TFBENCH_DETACHED_ACTORS) - before:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            removed.append(name)
        except ValueError:
            pass
    return removed


# --- the pending-trial watchdog ----------------------------------------------------------------------

def unschedulable(pending: list[dict[str, float]], nodes: list[dict[str, float]], total: dict[str, float],
                  available: dict[str, float]) -> bool:
    """A pending placement group will never be placed: its bundles do not fit the alive nodes at all, or the
    cluster is idle (every CPU and GPU free, so nothing will free more) and it is still not placed."""
    if not _place(pending, [dict(n) for n in nodes]):
        return True
    return all(available.get(k, 0.0) + 1e-9 >= total.get(k, 0.0) for k in KINDS)


class PendingWatchdog:
    """Polled from the Tune loop: a placement group pending for more than `limit_s` that `unschedulable`
    says will never be placed becomes one UserError line, instead of `running 1` forever."""

    def __init__(self, p: Placement, limit_s: float = PENDING_LIMIT_S, every_s: float = 2.0):
        self.p, self.limit_s, self.every_s = p, limit_s, every_s
        self.first_seen: dict[str, float] = {}
        self.last_poll = 0.0

    def poll(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if now - self.last_poll < self.every_s:
            return
        self.last_poll = now
        import ray
        from ray.util import placement_group_table

        table = placement_group_table()
        pending = {pg_id: [dict(b) for b in rec.get("bundles", {}).values()]
                   for pg_id, rec in table.items() if rec.get("state") == "PENDING"}
        self.first_seen = {k: self.first_seen.get(k, now) for k in pending}
        for pg_id, bundles in pending.items():
            if now - self.first_seen[pg_id] < self.limit_s:
                continue
            if unschedulable(bundles, ray_nodes(), ray.cluster_resources(), ray.available_resources()):
                raise UserError(self.line(now - self.first_seen[pg_id]))

    def line(self, waited: float) -> str:
        import ray

        return (f"resources: a trial asking for {self.p.describe()} could not be placed for {waited:.0f} s "
                f"while the Ray cluster had no other work; the cluster has "
                f"{_fmt(ray.cluster_resources())} (nodes: {'; '.join(_fmt(n) for n in ray_nodes())})")


def tune_watchdog_callback(watchdog: PendingWatchdog) -> Any:
    from ray import tune

    class _Watch(tune.Callback):
        def on_step_begin(self, iteration, trials, **info):
            watchdog.poll()

    return _Watch()


def fit(tuner: Any) -> Any:
    """tuner.fit(), with the watchdog's UserError (raised inside Tune's loop, which wraps it) given back as
    itself, so the user sees its one line."""
    try:
        return tuner.fit()
    except Exception as e:
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None
