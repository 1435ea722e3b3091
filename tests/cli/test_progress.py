"""harness.progress with a fake clock: the time format, the status line on a terminal, the heartbeat in a log,
the eta worked out by hand, and timestamped train.log lines."""
from __future__ import annotations

import io
import math
import re

import pytest

from harness.progress import Progress, file_logger, fmt_duration

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_fmt_duration_is_m_ss_under_an_hour_and_h_mm_ss_above():
    assert fmt_duration(0) == "0:00"
    assert fmt_duration(59.6) == "1:00"
    assert fmt_duration(3599) == "59:59"
    assert fmt_duration(3600) == "1:00:00"
    assert fmt_duration(2 * 3600 + 2 * 60 + 5) == "2:02:05"
    assert fmt_duration(math.nan) == "?" and fmt_duration(math.inf) == "?"


def _log_progress(clock: FakeClock, **kw) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress("sweep", 10, done_before=2, stream=out, tty=False, heartbeat_s=60, clock=clock, **kw), out


def test_log_gets_a_timestamped_line_per_change_and_a_heartbeat_when_nothing_changes():
    clock = FakeClock()
    p, out = _log_progress(clock)
    p.show(force=True)
    clock.t += 30
    p.tick()  # 30 s, nothing changed: quiet
    assert len(out.getvalue().splitlines()) == 1
    clock.t += 31
    p.tick()  # 61 s since the last line: a heartbeat
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and re.match(STAMP + r" \[sweep\] finished 2/10  running 0  failed 0  pending 8  "
                                        r"elapsed 1:01  eta \?$", lines[1]), lines[1]
    p.start("a")
    p.start("b")
    clock.t += 59  # 120 s after the start
    p.finish("a")
    clock.t += 1
    p.fail("b")
    lines = out.getvalue().splitlines()
    assert len(lines) == 6  # a line per change: two starts, a finish, a failure
    # one trial done in this run in 120 s; 10 - 3 finished - 0 failed = 7 remain -> 7 x 120 s = 14:00
    assert lines[4].endswith("[sweep] finished 3/10  running 1  failed 0  pending 6  elapsed 2:00  eta 14:00")
    # 121 s per finished trial; 10 - 3 - 1 failed = 6 remain -> 726 s
    assert lines[5].endswith("[sweep] finished 3/10  running 0  failed 1  pending 6  elapsed 2:01  eta 12:06")
    clock.t += 59.9
    p.tick()
    assert len(out.getvalue().splitlines()) == 6
    clock.t += 0.2
    p.tick()
    assert len(out.getvalue().splitlines()) == 7
    p.close()
    assert out.getvalue().endswith("\n") and "\r" not in out.getvalue()


def test_heartbeat_interval_is_configurable():
    clock = FakeClock()
    out = io.StringIO()
    p = Progress("s", 4, stream=out, tty=False, heartbeat_s=5, clock=clock)
    p.show(force=True)
    for _ in range(20):
        clock.t += 1
        p.tick()
    assert len(out.getvalue().splitlines()) == 1 + 20 // 5


def test_terminal_rewrites_one_line_in_place():
    clock = FakeClock()
    out = io.StringIO()
    p = Progress("sweep", 3, stream=out, tty=True, refresh_s=1.0, clock=clock)
    p.show(force=True)
    p.start("a")
    clock.t += 0.5
    p.tick()  # no change, under a second: nothing
    clock.t += 0.6
    p.tick()  # a second later: the elapsed time moves
    text = out.getvalue()
    assert text.count("\r") == 3 and "\n" not in text
    assert text.split("\r")[-1].rstrip().endswith("finished 0/3  running 1  failed 0  pending 2  elapsed 0:01  eta ?")
    p.note("a message")
    p.close()
    assert re.search(r"\r +\r" + STAMP + r" a message\n", out.getvalue())
    assert out.getvalue().endswith("\n")


def test_units_show_a_percentage_and_the_last_step():
    clock = FakeClock()
    out = io.StringIO()
    p = Progress("landscape", 200, unit="model evaluations", stream=out, tty=False, clock=clock)
    clock.t += 10
    p.advance(50, "CE s0: grid row 1/4")
    line = out.getvalue().splitlines()[-1]
    # 50 evaluations in 10 s, 150 to go -> 30 s
    assert line.endswith("[landscape]  25.0% (50/200 model evaluations)  CE s0: grid row 1/4  elapsed 0:10  eta 0:30")
    p.total -= 100  # work found already done (resumed) leaves the total
    clock.t += 10
    p.advance(50, "CE s0: curve")
    assert out.getvalue().splitlines()[-1].endswith("100.0% (100/100 model evaluations)  CE s0: curve  elapsed 0:20  "
                                                    "eta 0:00")


def test_file_logger_timestamps_every_line_and_appends(tmp_path):
    clock = FakeClock()
    log = file_logger(tmp_path / "train.log", clock=clock)
    log("epoch 1")
    clock.t += 3600
    log("Traceback:\n  line two")
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert len(lines) == 3
    assert all(re.match(STAMP + " ", line) for line in lines)
    assert [line[20:] for line in lines] == ["epoch 1", "Traceback:", "  line two"]
    first, second = lines[0][:19], lines[1][:19]
    assert first != second  # an hour apart


def test_the_sweep_runners_tune_callback_drives_progress(tmp_path):
    """The runner's Tune callback, called as Tune calls it (no Ray cluster): starts, ends, failures and the
    heartbeat from Tune's loop reach the one Progress; a trial that returns with an error record (a diverged
    loss is not retried) counts as failed."""
    import types

    from harness.folders import ResultsFolder
    from harness.sweep.session import progress_callback

    clock = FakeClock()
    out = io.StringIO()
    p = Progress("q", 3, stream=out, tty=False, heartbeat_s=60, clock=clock)
    cb = progress_callback(p, ResultsFolder(tmp_path), lambda trial: trial.config["key"])
    trial = {k: types.SimpleNamespace(config={"key": k}) for k in ("a", "b", "c", "d")}
    for k in ("a", "b"):
        cb.on_trial_start(iteration=1, trials=[], trial=trial[k])
    clock.t += 10
    cb.on_trial_complete(iteration=2, trials=[], trial=trial["a"])
    cb.on_trial_error(iteration=3, trials=[], trial=trial["b"])
    cb.on_trial_start(iteration=4, trials=[], trial=trial["c"])
    n = len(out.getvalue().splitlines())
    clock.t += 61
    cb.on_step_end(iteration=5, trials=[])
    lines = out.getvalue().splitlines()
    assert len(lines) == n + 1 == 6
    # 1 finished in 71 s, 3 - 1 finished - 1 failed = 1 to go -> 71 s
    assert lines[-1].endswith("[q] finished 1/3  running 1  failed 1  pending 0  elapsed 1:11  eta 1:11")
    (tmp_path / "trials" / "d").mkdir(parents=True)
    (tmp_path / "trials" / "d" / "error.json").write_text('{"status": "failed", "error": "TrialDiverged"}')
    cb.on_trial_complete(iteration=6, trials=[], trial=trial["d"])
    assert "failed 2" in out.getvalue().splitlines()[-1]
    # each reported epoch reaches the estimate and the best-so-far (epochs_of: 3 epochs per trial)
    cb = progress_callback(p, ResultsFolder(tmp_path), lambda t: t.config["key"], lambda key: 3)
    cb.on_trial_result(iteration=7, trials=[], trial=trial["c"], result={"epoch": 2, "val_top1": 0.75})
    assert p.fraction == {"c": pytest.approx(2 / 3)} and (p.best_value, p.best_label) == (0.75, "c")


def test_the_estimate_exists_before_a_trial_ends_and_stopped_and_best_are_shown():
    clock = FakeClock()
    out = io.StringIO()
    p = Progress("s", 4, stream=out, tty=False, heartbeat_s=60, clock=clock)
    p.start("a")
    p.start("b")
    clock.t += 30
    p.epoch("a", 1, 4)   # a quarter of a trial and half of another in 30 s: 0.75 trials
    p.epoch("b", 2, 4)
    p.best(0.5, "a")
    p.best(0.9, "b")
    p.best(0.7, "a")     # not better: the best stays b's
    # work left: 4 trials - 0.75 done = 3.25 trials at 30 s / 0.75 trials = 130 s
    assert p.eta_s(clock.t) == pytest.approx(130.0)
    assert "best val top-1 90.00% (b)" in p.line(clock.t) and "eta 2:10" in p.line(clock.t)
    p.stop("a")          # an early stop by ASHA: done, not finished, not failed
    assert p.line(clock.t).startswith("[s] finished 0/4  running 1  stopped early 1  failed 0  pending 2")


def test_plain_progress_writes_timestamped_lines_on_a_terminal_too():
    out = io.StringIO()
    p = Progress("s", 2, stream=out, tty=False, clock=FakeClock())
    p.start("a")
    assert "\r" not in out.getvalue() and out.getvalue().count("\n") == 1
