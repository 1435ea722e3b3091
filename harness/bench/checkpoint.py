"""`tfbench bench checkpoint`: the wall time that checkpoints add to a trial, per epoch, measured with
checkpoints on against off in one run.

The trial is CE on the CIFAR PreAct-ResNet-18 (100 classes; the synthetic 'cifar-like' set of `bench harness`),
one torch thread by default, a few steps per epoch (`--steps`): what a checkpoint costs depends on the state's
size (~90 MiB: the weights and SGD's momentum), not on the epoch's length. Each round runs the trial twice,
checkpoints on (the default `train.checkpoint_every`, or `--every`) and off, the order alternating between
rounds. The table also gives the metrics lines' median `checkpoint_time_s` (the training thread's blocking
part) and `checkpoint_write_time_s` (the background writer's seconds), n/a for code without them. An epoch's wall time is the span between two `report` calls (steps, evaluation, the checkpoint's
blocking part and whatever the background writer takes from the training thread); the first epoch (warm-up) has
no span. The extra per epoch is the median span with checkpoints on minus the median span off; the rounds'
median is reported. The end of a trial waits for the last write: that is shown once per trial, apart.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from harness.bench.common import (
    bench_device,
    fmt_mib,
    load_average,
    machine_line,
    median,
    set_threads,
    verdict,
)
from harness.bench.harness import CPU_PER_CLASS, MODEL, cifar_like_params
from harness.errors import UserError
from harness.folders import TrialFolder

TARGET_EXTRA_S = 0.1  # the goal: under 0.1 s of extra wall time per epoch (was 0.44 s with one thread)


def timed_trial(spec: Any, folder: Path) -> dict[str, Any]:
    """`train_trial(spec)` with the epochs' wall-time spans (between report calls) and its result.json."""
    from harness.train.loop import train_trial

    stamps: list[float] = []
    tick = time.perf_counter()
    train_trial(spec, folder, log=lambda line: None, report=lambda m: stamps.append(time.perf_counter()))
    end = time.perf_counter()
    trial = TrialFolder(folder)
    checkpoint = folder / trial.CHECKPOINT
    lines = [json.loads(line) for line in (folder / trial.METRICS).read_text().splitlines()][1:]  # as the spans
    return {"spans": [b - a for a, b in zip(stamps, stamps[1:], strict=False)], "after_last_report_s": end - stamps[-1],
            "call_s": end - tick, "lines": lines,
            "checkpoint_bytes": checkpoint.stat().st_size if checkpoint.exists() else None}


@dataclass
class CheckpointBench:
    rounds: list[dict[str, Any]]
    extra_s: float           # median over rounds of (median epoch span on - off)
    end_extra_s: float       # median over rounds of the extra time after the last epoch (the final write)
    epochs: int
    steps: int
    batch: int
    every: str
    checkpoint_bytes: int | None
    model: str
    smoke: bool
    machine: str
    load_end: tuple[float, float, float] | None
    seconds: float


def bench_checkpoint(*, epochs: int = 6, steps: int = 2, batch: int | None = None, rounds: int = 3,
                     every: str | int | None = None, device: str = "auto", threads: int = 1,
                     smoke: bool = False) -> CheckpointBench:
    """Checkpoints on against off, `rounds` times; `every`: train.checkpoint_every (None: its default).

    `smoke`: tiny_cnn on an 8x8, 10-class set, 3 epochs of 2 steps, one round (keeps the code working)."""
    from harness.config.resolve import resolve_trial

    t_start = time.perf_counter()
    dev = bench_device(device, target="checkpoint")
    if epochs < 3 or steps < 1 or rounds < 1:
        raise UserError(f"bench checkpoint: --epochs must be >= 3 (two spans), --steps and --rounds >= 1, got "
                        f"{epochs}, {steps}, {rounds}")
    model, data_params = MODEL, cifar_like_params(per_class=CPU_PER_CLASS)
    if smoke:
        model, epochs, steps, rounds = "tiny_cnn", 3, 2, 1
        data_params = cifar_like_params(per_class=4, num_classes=10, image_size=8)
    batch = batch or (8 if smoke else 32)
    old_threads = torch.get_num_threads()
    used = set_threads(threads, dev)
    machine = machine_line(dev, used if dev.type == "cpu" else None)
    on = {"checkpoint": True, **({} if every is None else {"checkpoint_every": every})}
    try:
        specs = {flag: resolve_trial(method="ce", dataset="synthetic", model=model, seed=0,
                                     dataset_params=dict(data_params),
                                     train=dict(epochs=epochs, batch_size=batch, device=str(dev),
                                                threads=used if dev.type == "cpu" else 0, max_steps_per_epoch=steps,
                                                **(on if flag else {"checkpoint": False})))
                 for flag in (True, False)}
        out = []
        with tempfile.TemporaryDirectory(prefix="tfbench-bench-checkpoint-") as tmp:
            for r in range(rounds):  # the order alternates, so that going first favours neither
                order = (True, False) if r % 2 == 0 else (False, True)
                runs = {flag: timed_trial(specs[flag], Path(tmp) / f"round{r}-{'on' if flag else 'off'}")
                        for flag in order}
                out.append(_round(r + 1, runs, order[0]))
    finally:
        torch.set_num_threads(old_threads)
    return CheckpointBench(rounds=out, extra_s=median([o["extra_s"] for o in out]),
                           end_extra_s=median([o["end_extra_s"] for o in out]), epochs=epochs, steps=steps,
                           batch=batch, every=str(getattr(specs[True].train, "checkpoint_every", "1 (no such setting)")),
                           checkpoint_bytes=out[-1]["checkpoint_bytes"], model=model, smoke=smoke, machine=machine,
                           load_end=load_average(), seconds=time.perf_counter() - t_start)


def _round(number: int, runs: dict[bool, dict[str, Any]], first: bool) -> dict[str, Any]:
    on, off = runs[True], runs[False]

    def per_epoch(name: str) -> float | None:  # the metrics lines of the spanned epochs (absent before the accounting)
        values = [line[name] for line in on["lines"] if name in line]
        return median(values) if values else None

    return {"round": number, "first": "on" if first else "off", "span_on_s": median(on["spans"]),
            "span_off_s": median(off["spans"]), "extra_s": median(on["spans"]) - median(off["spans"]),
            "end_extra_s": on["after_last_report_s"] - off["after_last_report_s"],
            "blocking_s": per_epoch("checkpoint_time_s"), "write_s": per_epoch("checkpoint_write_time_s"),
            "checkpoint_bytes": on["checkpoint_bytes"]}


def format_bench_checkpoint(res: CheckpointBench, tablefmt: str = "github") -> str:
    head = (f"checkpoint overhead: CE on {res.model}, batch {res.batch}, {res.epochs} epochs of {res.steps} steps, "
            f"train.checkpoint_every {res.every}; checkpoint.pt {fmt_mib(res.checkpoint_bytes)}"
            f"{' (SMOKE: sizes too small to mean anything)' if res.smoke else ''}\n{res.machine}\n")

    def s(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    table = [(o["round"], o["first"], s(o["span_off_s"]), s(o["span_on_s"]), f"{o['extra_s']:+.3f}",
              s(o["blocking_s"]), s(o["write_s"]), f"{o['end_extra_s']:+.3f}") for o in res.rounds]
    headers = ["round", "first", "epoch s (off)", "epoch s (on)", "extra s/epoch", "checkpoint_time_s",
               "checkpoint_write_time_s", "end of trial extra s"]
    load = res.load_end
    foot = [f"extra wall time per epoch (median of {len(res.rounds)} rounds): {res.extra_s:+.3f} s; at the end of a "
            f"trial, once: {res.end_extra_s:+.3f} s; took {res.seconds:.0f} s"
            + (f"; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else ""),
            f"reference: extra wall time per epoch < {TARGET_EXTRA_S} s: "
            f"{'not judged (smoke)' if res.smoke else verdict(res.extra_s < TARGET_EXTRA_S)}"]
    return head + tabulate(table, headers=headers, tablefmt=tablefmt, disable_numparse=True) + "\n" + "\n".join(foot)


__all__ = ["CheckpointBench", "bench_checkpoint", "format_bench_checkpoint", "timed_trial"]
