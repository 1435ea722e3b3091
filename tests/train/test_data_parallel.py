"""Data-parallel trials on DistributedDataParallel, in two gloo processes on CPU (torch.multiprocessing, no Ray):

- the mathematical oracle: with equal slices, averaging the workers' gradients is the gradient of the whole
  global batch, so a few DDP steps must leave the weights (and PS-KD's table) of a single process that stepped
  on the whole global batches; for CE, for Zipf's LS with its extra dense layer and dense votes (a module and
  the classifier used outside the forward), for PS-KD; and PS-KD's fixed-size gather with a short last batch;
- every built-in method as a whole 2-worker trial under find_unused_parameters=False: it finishes and both
  replicas end with the same weights, extra modules and tables; compiled after DDP, Zipf's LS and CS-KD train
  to the eager DDP trial's numbers."""
from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import read_metrics

pytestmark = pytest.mark.slow

C, N, B = 10, 16, 8  # classes, training images, global batch (two slices of 4)
ZIPF = {"dense": True, "extra_dense_layer": True, "lam": 1.0, "beta": 0.5}
CASES = {  # name: (method, params, lr, global batches of indices, by step; two steps an epoch)
    "ce": ("ce", {}, 0.1, "full"),
    "zipf_extra_dense": ("zipf", ZIPF, 0.1, "full"),
    "pskd": ("pskd", {}, 0.1, "full"),
    # lr 0: the weights stay, so the table holds exactly the single process's predictions; the second global
    # batch has 7 images, 4 on rank 0 and 3 on rank 1, whose gather is padded to 4
    "pskd_short_batch": ("pskd", {}, 0.0, "short"),
}
METHODS = ["ce", "ls", "tfkd", "pskd", "cskd", "ols", "zipf", "maxsup", "uskd"]  # dlb, byot, bake refuse
COMPILED = ["zipf", "cskd"]


def spawn(fn, *args) -> None:
    """fn(rank, world, *args) in two processes joined in a gloo group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_entry, args=(port, fn, args), nprocs=2, join=True)


def _entry(rank: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        fn(rank, 2, *args)
    finally:
        torch.distributed.destroy_process_group()


def batches(kind: str) -> list[torch.Tensor]:
    perms = [torch.randperm(N, generator=torch.Generator().manual_seed(e)) for e in (10, 11)]
    if kind == "full":  # two epochs of two global batches of B
        return [p[s:s + B] for p in perms for s in (0, B)]
    return [perms[0][:B], perms[0][B:N - 1]]  # B, then B - 1


def train_case(name: str, rank: int, world: int) -> dict:
    """A few steps of `train_step` on rank's slices [rank::world] of fixed global batches. In eval mode: train-mode
    batch norm normalises each worker's slice by its own statistics, which no single process on the whole batch
    reproduces; in eval mode it is a fixed affine map, and everything else is a mean over the images."""
    from harness.config.resolve import resolve_trial
    from harness.models import create_model, feature_channels
    from harness.train.distributed import gather_update
    from harness.train.loop import build_step_rig, train_step
    from methods import StepContext, build_method

    method_name, params, lr, kind = CASES[name]
    torch.manual_seed(0)
    model = create_model("tiny_cnn", num_classes=C, in_chans=3, input_size=(3, 8, 8))
    method = build_method(method_name, params, num_classes=C, num_train=N, feature_channels=feature_channels(model))
    t = resolve_trial(method="ce", dataset="digits", model="tiny_cnn", seed=0, train=dict(batch_size=B, epochs=2)).train
    rig = build_step_rig(t, model, method, torch.device("cpu"), world)
    model.eval()
    data = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, 3, 8, 8, generator=data), torch.randint(0, C, (N,), generator=data)
    initial = [p.detach().clone() for p in rig.params]
    gather = partial(gather_update, slots=-(-B // world)) if world > 1 else None
    for step, idx in enumerate(batches(kind)):
        local = idx[rank::world]
        ctx = StepContext(epoch=step // 2, num_epochs=2, indices=local)
        train_step(model=rig.step_model, method=method, opt=rig.opt, x=x[local], y=y[local], xp=None, ctx=ctx, lr=lr,
                   classifier=rig.classifier, amp=False, sums={}, counts=torch.zeros(2), gather=gather)
    ddp = rig.step_model if isinstance(rig.step_model, torch.nn.parallel.DistributedDataParallel) else None
    return {"params": [p.detach().clone() for p in rig.params], "initial": initial, "table": method.state_dict().get("table"),
            # every trained parameter, the extra layer's included, is in DDP's buckets
            "covered": ddp is not None and {id(p) for p in ddp.parameters()} == {id(p) for p in rig.params}}


def _oracle_worker(rank: int, world: int, out: str) -> None:
    torch.save({name: train_case(name, rank, world) for name in CASES}, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    spawn(_oracle_worker, str(out))
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


@pytest.mark.parametrize("name", list(CASES))
def test_ddp_steps_equal_one_process_on_the_whole_global_batch(replicas, name):
    single = train_case(name, 0, 1)
    moved = [not torch.equal(p, q) for p, q in zip(single["params"], single["initial"], strict=True)]
    assert all(moved) if CASES[name][2] > 0 else not any(moved)  # every parameter got a gradient, extra included
    for rank, worker in enumerate(replicas):
        got = worker[name]
        assert got["covered"], (name, rank)
        assert len(got["params"]) == len(single["params"])
        for p, q in zip(got["params"], single["params"], strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        if single["table"] is not None:
            assert single["table"].abs().sum(1).gt(0).sum() == N - (CASES[name][3] == "short")  # rows written
            torch.testing.assert_close(got["table"], single["table"], rtol=1e-5, atol=1e-6)


def _trial_worker(rank: int, world: int, out: str) -> None:
    """Each built-in method as a whole trial (train_trial: the plan's slices, DDP, the gather, reduce_epoch);
    the rig is kept to save this replica's final state."""
    from harness.config.resolve import resolve_trial
    from harness.train import loop

    rigs = []
    build, compile_ = loop.build_rig, torch.compile
    loop.build_rig = lambda *a, **k: rigs.append(build(*a, **k)) or rigs[-1]
    # Dynamo's eager backend: the graphs captured around DDP, without minutes of C++ generation (test_compile.py)
    torch.compile = lambda fn=None, **k: compile_(fn, **{**k, "backend": "eager", "mode": None})
    for name in METHODS + [f"{m}_compiled" for m in COMPILED]:
        spec = resolve_trial(method=name.removesuffix("_compiled"), dataset="digits", model="tiny_cnn", seed=0,
                             train=dict(epochs=2, batch_size=32, max_steps_per_epoch=3, workers=world,
                                        compile=name.endswith("_compiled")))
        result = loop.train_trial(spec, Path(out) / name, log=lambda s: None)
        r = rigs[-1]
        torch.save({"result": result, "ddp": type(getattr(r.step_model, "_orig_mod", r.step_model)).__name__,
                    "model": r.model.state_dict(), "extra": None if r.extra is None else r.extra.state_dict(),
                    "method": r.method.state_dict()}, Path(out) / name / f"rank{rank}.pt")


def test_every_method_trains_under_ddp_and_its_replicas_stay_equal(tmp_path):
    spawn(_trial_worker, str(tmp_path))
    for name in METHODS + [f"{m}_compiled" for m in COMPILED]:
        ranks = [torch.load(tmp_path / name / f"rank{r}.pt") for r in (0, 1)]
        for got in ranks:
            assert got["result"]["status"] == "finished" and got["result"]["world_size"] == 2, name
            assert got["ddp"] == "DistributedDataParallel", name
        a, b = ranks
        # the digits preset: Zipf's extra dense layer; USKD's weak classifier
        assert (a["extra"] is None) == (not name.startswith(("zipf", "uskd")))
        for part in ("model", "extra", "method"):
            for key, value in (a[part] or {}).items():
                assert torch.equal(value, b[part][key]), (name, part, key)
    # DDP, then compiled (maps and the extra layer for Zipf's LS, the no-grad partner forward for CS-KD): the
    # numbers of the eager DDP trial
    for name in COMPILED:
        eager, compiled = (read_metrics(tmp_path / n, untimed=True) for n in (name, f"{name}_compiled"))
        assert len(eager) == len(compiled) == 2
        for e, c in zip(eager, compiled, strict=True):
            assert e.keys() == c.keys() and all(abs(e[k] - c[k]) < 1e-5 for k in e), name
