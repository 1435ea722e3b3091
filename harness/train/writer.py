"""Checkpoints off the training path: the state is snapshot into host memory on the training thread, then
serialised, hashed and written (checkpoint.save_checkpoint: atomic, sha256 trailer, .prev rotation) by one
background thread, in the order the saves were asked for.

Why one writer and FIFO: best.pt must land before the checkpoint that records its epoch (checkpoint.restore_best).
Why a snapshot and not the live tensors: training goes on changing the weights in place while the file is written.
Memory: one snapshot per file at most (a save waits for the previous write of the same file before it copies),
and the write streams the snapshot to disk (no serialised copy in memory), so a large method table (PS-KD's
ImageNet table, ~5 GB) is held in host memory once more at most, never twice.
"""
from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.config.spec import interval_seconds
from harness.train.checkpoint import BEST, CHECKPOINT, save_checkpoint


def snapshot(state: Any, device: torch.device) -> Any:
    """A copy of `state` (dicts, lists, tuples of tensors and plain values) in host memory that training can
    no longer change. CPU tensors are cloned; device tensors are copied into pinned memory without blocking
    (that copy is already the snapshot: no second one), then one synchronisation covers them all."""
    copies_on_device = []

    def copy_of(x: Any) -> Any:
        if isinstance(x, Tensor):
            x = x.detach()
            if x.device.type == "cpu":
                return x.clone()
            out = torch.empty(x.shape, dtype=x.dtype, device="cpu", pin_memory=True)
            copies_on_device.append(x.device)
            return out.copy_(x, non_blocking=True)
        if isinstance(x, dict):
            return {k: copy_of(v) for k, v in x.items()}
        if type(x) in (list, tuple):
            return type(x)(copy_of(v) for v in x)
        if isinstance(x, np.ndarray):
            return x.copy()
        return copy.deepcopy(x)  # numbers, strings, None: immutable; anything else: copied whole

    out = copy_of(state)
    if copies_on_device:
        torch.cuda.synchronize(copies_on_device[0])
    return out


class CheckpointWriter:
    """One background thread that writes (path, state) jobs in order with `save_checkpoint`.

    An error in the thread is kept and raised by the next `save` or by `drain` (never lost); the jobs after a
    failed one are dropped, so the files on disk stay as they were at the last good write. `write_s` adds up
    the thread's seconds (serialise, hash, fsync, rename); `blocking_s` the training thread's (snapshots, waits)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._done = threading.Condition()
        self._outstanding: dict[Path, int] = {}
        self._error: BaseException | None = None
        self.write_s = 0.0
        self.blocking_s = 0.0
        self._thread = threading.Thread(target=self._run, name="tfbench-checkpoint-writer", daemon=True)
        self._thread.start()

    def copy(self, path: Path, state: Any, device: torch.device) -> Any:
        """A snapshot of `state` for `path`, taken once `path`'s previous write is done (one snapshot per file in
        memory); raises an earlier write's error."""
        tick = time.perf_counter()
        self._wait(lambda: not self._outstanding.get(path))
        self._raise()
        copied = snapshot(state, device)
        self.blocking_s += time.perf_counter() - tick
        return copied

    def put(self, path: Path, copied: Any) -> None:
        """Queue the write of a snapshot (from `copy`)."""
        self._raise()
        with self._done:
            self._outstanding[path] = self._outstanding.get(path, 0) + 1
        self._jobs.put((path, copied))

    def drain(self, *, raise_error: bool = True) -> BaseException | None:
        """Wait until every queued write is on disk; raise (or, with raise_error=False, return) a write's error."""
        tick = time.perf_counter()
        self._wait(lambda: not any(self._outstanding.values()))
        self.blocking_s += time.perf_counter() - tick
        if raise_error:
            self._raise()
        return self._error

    def _wait(self, ready: Callable[[], bool]) -> None:
        with self._done:
            self._done.wait_for(lambda: ready() or self._error is not None)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            path, state = self._jobs.get()
            tick = time.perf_counter()
            try:
                if self._error is None:
                    save_checkpoint(path, **state)
            except BaseException as e:  # kept for the training thread, which raises it
                e.add_note(f"while writing {path} in the background (the earlier files are intact)")
                self._error = e
            del state  # the snapshot's memory goes before the next job's wait ends
            with self._done:
                self.write_s += time.perf_counter() - tick
                self._outstanding[path] -= 1
                self._done.notify_all()


class Checkpoints:
    """A trial's saves (rank 0): the selected epoch's weights and the checkpoint, on `train.checkpoint_every`.

    `improved` snapshots the weights of a newly selected epoch and holds them; `take` snapshots the epoch's
    state when a checkpoint is `due` (every N epochs, or at the first epoch end an interval after the last
    checkpoint or the start, and always at the final epoch); `commit` queues the held weights as best.pt and then the checkpoint, so best.pt
    always lands before the checkpoint that selects it and holds a checkpoint's selection or the next one
    (restore_best's rule, with checkpoints that skip epochs too). `finish` queues what is held and drains.
    """

    def __init__(self, out: Path, *, every: int | str, enabled: bool, keeps_best: bool, device: torch.device) -> None:
        self.out, self.enabled, self.keeps_best, self.device = out, enabled, keeps_best, device
        self.every, self.interval = every, interval_seconds(every)
        self.writer = CheckpointWriter() if enabled or keeps_best else None
        self._best: dict[str, Any] | None = None
        self._state: dict[str, Any] | None = None
        self._last = time.monotonic()

    @property
    def blocking_s(self) -> float:
        return self.writer.blocking_s if self.writer else 0.0

    @property
    def write_s(self) -> float:
        return self.writer.write_s if self.writer else 0.0

    def improved(self, model_state: dict[str, Tensor], *, epoch: int, val_top1: float) -> None:
        if self.keeps_best:
            self._best = {"model": self.writer.copy(self.out / BEST, model_state, self.device), "epoch": epoch,
                          "val_top1": val_top1}

    def due(self, epoch: int, *, final: bool) -> bool:
        if not self.enabled:
            return False
        if self.interval is None:
            return final or epoch % int(self.every) == 0
        return final or time.monotonic() - self._last >= self.interval

    def take(self, state: dict[str, Any]) -> None:
        """Snapshot a due checkpoint's state (before the epoch's metrics line, so that the line holds the time)."""
        self._last = time.monotonic()
        self._state = self.writer.copy(self.out / CHECKPOINT, state, self.device)

    def commit(self) -> None:
        """Queue the held best weights, then the taken checkpoint (after the epoch's metrics line is on disk:
        the record always covers the checkpoint)."""
        if self._state is not None:
            self._flush_best()
            self.writer.put(self.out / CHECKPOINT, self._state)
            self._state = None

    def finish(self) -> None:
        """At the end of the epochs: best.pt on disk (the test split is read with it), every write done."""
        if self.writer is not None:
            self._flush_best()
            self.writer.drain()

    def abandon(self, log: Callable[[str], None]) -> None:
        """On an exception or Ctrl-C: finish the writes already queued, so a stopped trial leaves intact files;
        a write's own error is logged, not raised over the one that stopped the trial."""
        if self.writer is not None:
            error = self.writer.drain(raise_error=False)
            if error is not None:
                log(f"warning: a checkpoint write failed too: {type(error).__name__}: {error}")

    def _flush_best(self) -> None:
        if self._best is not None:
            self.writer.put(self.out / BEST, self._best)
            self._best = None
