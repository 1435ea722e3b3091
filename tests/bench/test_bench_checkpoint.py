"""`tfbench bench checkpoint` keeps working: a smoke run checked for structure (never for timing thresholds),
the per-round arithmetic checked by hand, bad options one line."""
from __future__ import annotations

import re

from harness.bench.checkpoint import _round
from harness.cli import main


def test_the_smoke_run_prints_one_round_with_every_column(capsys):
    assert main(["bench", "checkpoint", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "train.checkpoint_every 1" in out and "1 torch thread" in out and "(SMOKE" in out
    row = next(line for line in out.splitlines() if line.startswith("| 1 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 8 and cells[1] in ("on", "off")
    assert all(re.fullmatch(r"[+-]?\d+\.\d{3}", c) for c in cells[2:])  # measured, none n/a on this code
    assert float(cells[6]) > 0  # the background writer wrote something
    assert "not judged (smoke)" in out


def test_a_round_is_the_median_span_on_minus_off():
    on = {"spans": [1.0, 3.0, 2.0], "after_last_report_s": 0.5, "checkpoint_bytes": 10,
          "lines": [{"checkpoint_time_s": 0.1, "checkpoint_write_time_s": 0.4},
                    {"checkpoint_time_s": 0.3, "checkpoint_write_time_s": 0.2},
                    {"checkpoint_time_s": 0.2, "checkpoint_write_time_s": 0.9}]}
    off = {"spans": [1.5, 1.0, 4.0], "after_last_report_s": 0.25, "checkpoint_bytes": None, "lines": [{}, {}, {}]}
    r = _round(2, {True: on, False: off}, first=False)
    assert r["extra_s"] == 2.0 - 1.5 and r["end_extra_s"] == 0.25 and r["first"] == "off"
    assert r["blocking_s"] == 0.2 and r["write_s"] == 0.4 and r["checkpoint_bytes"] == 10
    older = _round(1, {True: {**on, "lines": [{}, {}]}, False: off}, first=True)  # code before the accounting
    assert older["blocking_s"] is None and older["write_s"] is None


def test_bad_options_are_one_line(capsys):
    for argv, expected in ((["--every", "10m"], "--every: found '10m'"), (["--epochs", "2"], "--epochs must be >= 3"),
                           (["--steps", "0"], "--steps must be >= 1")):
        assert main(["bench", "checkpoint", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
