"""Progress and log lines for long commands (`tfbench run`, `tfbench landscape`): one module, one time format.

On a terminal the status is one line rewritten in place. In a log (stdout is not a terminal) every line is
timestamped: one when a count changes, and a heartbeat every `heartbeat_s` seconds while nothing changes,
so a log of a sweep whose trials each take hours still says, at a fixed interval, that it is alive and
how far it has come. Per-trial `train.log` files get the same timestamps through `file_logger`.

Durations are H:MM:SS (M:SS under an hour); timestamps are local time, YYYY-MM-DD HH:MM:SS.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

Clock = Callable[[], float]  # seconds since the epoch; tests pass a fake one


def fmt_duration(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour; '?' when unknown (no estimate yet)."""
    if not math.isfinite(seconds):
        return "?"
    s = max(int(round(seconds)), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def file_logger(path: str | Path, *, clock: Clock = time.time) -> Callable[[str], None]:
    """A `log(line)` that appends to `path`, every line prefixed with the time it was written.

    Why open and close per line: a trial may be killed at any moment, and what it logged must be on disk."""
    path = Path(path)

    def log(text: str) -> None:
        stamp = timestamp(clock())
        with open(path, "a") as f:
            f.writelines(f"{stamp} {line}\n" for line in (text.splitlines() or [""]))
    return log


class Progress:
    """Work of `total` units, some done before this run (`done_before`, e.g. trials finished earlier).

    Trials are counted with start/finish/fail/stop (finished, running, failed, stopped early by a scheduler,
    pending); the epochs of running trials with `epoch(key, done, of)`, so that the estimate exists before the
    first trial ends; the best validation top-1 seen so far with `best`. Smaller units (model evaluations)
    are counted with `advance(n, what)`, shown as a percentage with the last `what`. The eta extrapolates
    this run's rate: elapsed / work done so far x work left, a trial's work being its share of epochs done.
    One Progress may span several phases (a search, then its confirm trials): `total` counts them all.
    """

    def __init__(self, name: str, total: int, *, done_before: int = 0, unit: str | None = None,
                 stream: TextIO | None = None, tty: bool | None = None, heartbeat_s: float = 60.0,
                 refresh_s: float = 1.0, clock: Clock = time.time):
        self.name, self.total, self.done_before, self.unit = name, total, done_before, unit
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.heartbeat_s, self.refresh_s, self.clock = heartbeat_s, refresh_s, clock
        self.done = 0
        self.running: set[str] = set()
        self.failed: set[str] = set()
        self.stopped: set[str] = set()
        self.fraction: dict[str, float] = {}   # running trial -> share of its epochs done
        self.best_value: float | None = None
        self.best_label = ""
        self.what = ""
        self.start_time = clock()
        self._shown_state: tuple | None = None
        self._shown_at = -math.inf

    # --- counting ---
    def start(self, key: str) -> None:
        self.running.add(key)
        self.show()

    def finish(self, key: str) -> None:
        self.running.discard(key)
        self.fraction.pop(key, None)
        self.done += 1
        self.show()

    def fail(self, key: str) -> None:
        self.running.discard(key)
        self.fraction.pop(key, None)
        self.failed.add(key)
        self.show()

    def stop(self, key: str) -> None:
        """An early stop by the scheduler (ASHA): done, but not finished."""
        self.running.discard(key)
        self.fraction.pop(key, None)
        self.stopped.add(key)
        self.show()

    def epoch(self, key: str, done: int, of: int) -> None:
        """A running trial has `done` of its `of` epochs on disk."""
        if of > 0:
            self.fraction[key] = min(done / of, 1.0)
        self.show()

    def best(self, value: float, label: str) -> None:
        """A validation top-1 seen now: kept when it is the best so far."""
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_label = value, label

    def phase(self, text: str) -> None:
        """A phase begins (starting Ray, the search, the confirm trials): its own timestamped line."""
        self.note(text)

    def advance(self, n: int = 1, what: str = "") -> None:
        self.done += n
        self.what = what
        self.show()

    # --- reading ---
    @property
    def finished(self) -> int:
        return self.done_before + self.done

    @property
    def pending(self) -> int:
        return max(self.total - self.finished - len(self.running) - len(self.failed) - len(self.stopped), 0)

    def eta_s(self, now: float) -> float:
        done = self.done + len(self.stopped) + sum(self.fraction.values())  # this run's work, in trials
        if done <= 0:
            return math.nan
        remaining = max(self.total - self.finished - len(self.failed) - len(self.stopped)
                        - sum(self.fraction.values()), 0)
        return (now - self.start_time) / done * remaining

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        times = f"elapsed {fmt_duration(now - self.start_time)}  eta {fmt_duration(self.eta_s(now))}"
        if self.unit is not None:
            pct = 100 * self.finished / self.total if self.total > 0 else 100.0
            what = f"  {self.what}" if self.what else ""
            return f"[{self.name}] {pct:5.1f}% ({self.finished}/{self.total} {self.unit}){what}  {times}"
        stopped = f"  stopped early {len(self.stopped)}" if self.stopped else ""
        best = (f"  best val top-1 {100 * self.best_value:.2f}% ({self.best_label})"
                if self.best_value is not None else "")
        return (f"[{self.name}] finished {self.finished}/{self.total}  running {len(self.running)}{stopped}  "
                f"failed {len(self.failed)}  pending {self.pending}{best}  {times}")

    # --- showing ---
    def show(self, force: bool = False) -> None:
        """Terminal: rewrite the line on a change or once per `refresh_s`. Log: a timestamped line on a change,
        else a heartbeat once `heartbeat_s` has passed since the last line."""
        now = self.clock()
        # epochs redraw a terminal's line; in a log they wait for the heartbeat (a line per epoch of every
        # trial would bury the changes)
        epochs = round(sum(self.fraction.values()), 2) if self.tty else None
        state = (self.done, len(self.running), len(self.failed), len(self.stopped), self.what, self.total, epochs)
        changed = state != self._shown_state
        wait = self.refresh_s if self.tty else self.heartbeat_s
        if not (force or changed or now - self._shown_at >= wait):
            return
        self._shown_state, self._shown_at = state, now
        if self.tty:
            self.stream.write("\r" + self.line(now).ljust(100))
        else:
            self.stream.write(f"{timestamp(now)} {self.line(now)}\n")
        self.stream.flush()

    def tick(self) -> None:
        """Call often (e.g. every loop of the scheduler): shows only what `show` would."""
        self.show()

    def note(self, text: str) -> None:
        """A one-off message (not a status): its own timestamped line, below the status line on a terminal."""
        now = self.clock()
        prefix = "\r" + " " * 100 + "\r" if self.tty else ""
        self.stream.write(f"{prefix}{timestamp(now)} {text}\n")
        self._shown_state = None  # redraw the status after it
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


__all__ = ["Progress", "file_logger", "fmt_duration", "timestamp"]
