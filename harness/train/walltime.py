"""Where a trial's wall time goes, on the training thread: the steps, evaluation, the checkpoints' blocking part
(snapshots, waits for the background writer), and the rest (`other_time_s`: the metrics line, logging, `report`,
barriers, the result's own bookkeeping), so that the parts add up to the wall time. The background writer's
seconds (`checkpoint_write_time_s`) overlap the others and are not part of the sum. docs/results.md names them. Their
names end in `_time_s`, the suffix of every wall-clock field (they differ between runs that are otherwise the same).
"""
from __future__ import annotations

import time
from typing import Protocol

PARTS = ("steps_time_s", "eval_time_s", "checkpoint_time_s")


class Saves(Protocol):
    blocking_s: float  # seconds the training thread spent on checkpoints so far
    write_s: float     # seconds the background writer spent so far


class WallClock:
    """Parts timed by the caller (`add`), checkpoint seconds read from `saves`; `lap` gives one epoch's record
    (the span since the previous lap), `record` the whole run's (since the clock started)."""

    def __init__(self, saves: Saves) -> None:
        self.saves = saves
        self.start = self._mark = time.perf_counter()
        self._total = dict.fromkeys(PARTS[:2], 0.0)
        self._lap = dict.fromkeys(PARTS[:2], 0.0)
        self._saved = (0.0, 0.0)  # the saves' (blocking_s, write_s) at the last lap

    def add(self, part: str, since: float) -> float:
        """Add the seconds from `since` to now to `part`; returns now (the next part's start)."""
        now = time.perf_counter()
        self._total[part] += now - since
        self._lap[part] += now - since
        return now

    def lap(self) -> dict[str, float]:
        now = time.perf_counter()
        blocking, written = self.saves.blocking_s, self.saves.write_s
        parts = {**self._lap, "checkpoint_time_s": blocking - self._saved[0]}
        record = {**parts, "checkpoint_write_time_s": written - self._saved[1],
                  "other_time_s": max(now - self._mark - sum(parts.values()), 0.0)}
        self._mark, self._saved, self._lap = now, (blocking, written), dict.fromkeys(PARTS[:2], 0.0)
        return record

    def record(self) -> dict[str, float]:
        wall = time.perf_counter() - self.start
        parts = {**self._total, "checkpoint_time_s": self.saves.blocking_s}
        return {"wall_time_s": wall, **parts, "checkpoint_write_time_s": self.saves.write_s,
                "other_time_s": max(wall - sum(parts.values()), 0.0)}
