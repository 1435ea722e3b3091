"""`tfbench bench methods`: forward + backward time of each method's loss alone, against CE.

Only the loss is timed: logits (B, C) are a leaf tensor, so no model runs. Each method gets what
its harness step would give it: PS-KD a filled table (epoch 1, so the table is read) and its
table write (`on_step_end`), CS-KD partner logits, OLS its accumulation, Zipf's LS the dense votes
of a synthetic (B, D, h, w) final map with h*w = V under a D -> C classifier. Two Zipf rows:
`zipf` is the loss from the votes (what the method adds to a step), `zipf+votes` also applies the
classifier at the V locations to get them (B*V*D*C multiply-adds, a matmul on a GPU).

Timing: methods run round-robin within each size, so load on a shared machine hits them alike;
each is warmed up first; the median of the repeats is reported; CUDA is synchronised around each
call. Default: one CPU thread.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tabulate import tabulate

from harness.bench.common import bench_device, sync
from methods import METHODS, StepContext, build_method

SIZES: tuple[tuple[int, int, int], ...] = ((128, 100, 64), (256, 1000, 49), (256, 10000, 49))  # (B, C, V)
SMOKE_SIZES: tuple[tuple[int, int, int], ...] = ((8, 10, 4), (6, 7, 9))
FEATURE_DIM = 512  # D of the synthetic final map (ResNet-18's width)
VOTES_ROW = "zipf+votes"


def _square_side(v: int) -> int:
    side = math.isqrt(v)
    if side * side != v:
        raise ValueError(f"bench: V must be a square number of locations (h = w), got {v}")
    return side


def _case(name: str, b: int, c: int, v: int, device: torch.device, gen: torch.Generator) -> Callable[[], None]:
    """Build one method's inputs and return a closure doing one forward + backward of its loss."""
    method_name = "zipf" if name == VOTES_ROW else name
    d = FEATURE_DIM
    num_train = 4 * b
    method = build_method(method_name, {}, num_classes=c, num_train=num_train, feature_channels=(d, d // 2)).to(device)
    logits = (torch.randn(b, c, generator=gen) * 3).to(device).requires_grad_(True)
    targets = torch.randint(0, c, (b,), generator=gen).to(device)
    ctx = StepContext(epoch=1, num_epochs=2, indices=torch.arange(b, device=device))
    cpu_gen = torch.Generator().manual_seed(1)
    ctx.generator = cpu_gen if device.type == "cpu" else torch.Generator(device).manual_seed(1)
    if method_name == "pskd":  # a table whose rows were written in epoch 0
        table_logits = torch.randn(num_train, c, generator=gen).to(device)
        method.apply_update(torch.arange(num_train, device=device), torch.softmax(table_logits, 1))
    if method_name == "cskd":
        ctx.partner_logits = (torch.randn(b, c, generator=gen) * 3).to(device)
    votes = None
    if method_name == "zipf":
        side = _square_side(v)
        classifier = torch.nn.Linear(d, c).to(device)
        ctx.final_map = torch.randn(b, d, side, side, generator=gen).to(device)
        ctx.classifier = classifier
        votes = method.votes(ctx)

    def step() -> None:
        logits.grad = None
        if name == "zipf":
            out = method.loss_from_votes(logits, targets, ctx, votes)
        else:
            out = method.loss(logits, targets, ctx)
        out["loss"].backward()
        method.on_step_end()

    return step


def _time(step: Callable[[], None], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t0


def bench_methods(sizes: Sequence[tuple[int, int, int]] = SIZES, repeats: int = 30, warmup: int = 5,
                  smoke: bool = False, methods: Sequence[str] | None = None, device: str = "auto",
                  threads: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """One row per (size, method): median ms of forward + backward of the loss, and its ratio to CE.

    `smoke`: tiny sizes, 2 repeats, 1 warm-up (a test that keeps this code working, not a measurement).
    `methods`: registered names (default: all), plus "zipf+votes"; CE is always included as the reference.
    """
    if smoke:
        sizes, repeats, warmup = SMOKE_SIZES, 2, 1
    names = list(methods) if methods else [*METHODS.names(), VOTES_ROW]
    names = ["ce"] + [n for n in names if n != "ce"]
    for n in names:
        if n != VOTES_ROW:
            METHODS.get(n)  # unknown names fail before any timing
    dev = bench_device(device, target="methods")
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    try:
        for b, c, v in sizes:
            gen = torch.Generator().manual_seed(seed)
            steps = {n: _case(n, b, c, v, dev, gen) for n in names}
            for step in steps.values():
                for _ in range(warmup):
                    _time(step, dev)
            times: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(repeats):
                for n, step in steps.items():
                    times[n].append(_time(step, dev))
            ce_ms = statistics.median(times["ce"]) * 1e3
            for n in names:
                ms = statistics.median(times[n]) * 1e3
                rows.append({"method": n, "B": b, "C": c, "V": v, "ms": ms, "x_ce": ms / ce_ms,
                             "repeats": repeats, "device": str(dev), "threads": torch.get_num_threads()})
    finally:
        torch.set_num_threads(old_threads)
    return rows


def format_bench_methods(rows: list[dict[str, Any]], tablefmt: str = "github") -> str:
    """The rows as one table: method, size, median ms, ratio to CE's own loss at that size."""
    table = [(r["method"], f'B={r["B"]} C={r["C"]} V={r["V"]}', f'{r["ms"]:.3f}', f'{r["x_ce"]:.2f}') for r in rows]
    head = ""
    if rows:
        r = rows[0]
        head = (f'loss forward+backward, median of {r["repeats"]} after warm-up, device {r["device"]}, '
                f'{r["threads"]} thread(s); zipf+votes adds the dense classifier at V locations (D={FEATURE_DIM})\n')
    return head + tabulate(table, headers=["method", "size", "ms", "x CE"], tablefmt=tablefmt, disable_numparse=True)
